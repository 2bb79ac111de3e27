"""The input path: from a split's image files to batches of normalised tensors on the device.

- `cache`: every image of a multi-pass split decoded once into a uint8 memmap (CACHE_DIR), reused
  while the files are unchanged; a single pass decodes batch by batch instead.
- `augment`: the lab's augmentation (rotation 0–90°, flips), one geometry on the CPU per image and
  on the device per batch.
- `pipeline`: `InputPipeline`, batches gathered ahead on a thread, copied once, then scaled,
  augmented and normalised on the device; shuffling depends only on (seed, epoch), so a resumed run
  replays an epoch exactly; `resolve_device`."""
