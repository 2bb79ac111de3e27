"""Training: a ResNet trained (or finetuned) on a data folder into a run folder, resumable exactly.

- `loop`: `train`, `finetune`, `resume_run`: the epoch loop (train one epoch, validate, save last.pt
  and best.pt, write the history and plots, report through a TrainingObserver); last.pt is saved
  before an epoch is reported, so a queued job records each epoch exactly once.
- `schedule`: the optimizer and the per-epoch learning rate (warmup, then step, cosine or constant).
- `run_state`: what a resume restores exactly (every RNG, optimizer, schedule, history) and `RunLog`
  (the best epoch by the chosen metric, the patience counter, an early stop).
- `early_stopping`: the early-stopping metrics, their direction, the patience stop's line.
- `crossval`: cross-validation: the fold plan, each fold's parameters, out-of-fold predictions and
  the summary over folds; `leukemia cv` runs the folds in one process, the queue as one job each.

The loop imports neither matplotlib nor Grad-CAM: the plots are drawn by a function that imports them."""
