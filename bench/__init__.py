"""Throughput benchmark: our cache + device-augmentation input path against the model's own ceiling and the lab's per-image DataLoader."""
