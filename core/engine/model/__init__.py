"""The model: the lab's ResNets, their checkpoints and what a model costs before it runs.

- `resnet`: ResNet18/50/152 written from scratch, layer for layer torchvision's (tests/test_models.py
  holds them equal: a strict state-dict load and identical outputs); `build_model(name)`.
- `checkpoint`: one dict of plain values and tensors, written atomically (free disk checked first),
  read back with `weights_only=True`; `model_from_checkpoint`.
- `limits`: a training job's device memory and compute estimates per architecture (measured by
  bench/memory_estimate.py), free disk before a checkpoint write."""
