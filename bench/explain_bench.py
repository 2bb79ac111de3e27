"""`python -m bench.explain_bench`: what a Grad-CAM heat map costs per image next to a prediction.

Times, on the same images and checkpoint (an untrained ResNet: the cost does not depend on the
weights), after one warm-up pass that builds the decoded-image cache:
- predict: `core.engine.evaluation.predict.predict_probabilities` (forward under inference_mode, softmax);
- explain, maps only: `core.engine.evaluation.explain.grad_cam` over the same batches (forward with the hook, the
  backward pass through pool+fc, upsampling);
- explain, whole: `core.engine.evaluation.explain.explain_samples` (maps plus the overlay PNGs, encoded).
Prints one table line per measure: milliseconds per image of wall time and of CPU time."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
import torch

from core.engine.data.layouts import read_split
from core.engine.data.synth import write_synthetic_dataset
from core.engine.evaluation.explain import explain_samples, grad_cam
from core.engine.evaluation.predict import predict_probabilities
from core.engine.inputs.pipeline import InputPipeline, resolve_device
from core.engine.model.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from core.engine.model.resnet import build_model
from core.service.settings import get_settings


def _timed(action) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


@click.command()
@click.option("--images", default=64, show_default=True, help="Images timed.")
@click.option("--size", default=450, show_default=True, help="Image size in pixels (450: the real cells).")
@click.option("--arch", default="resnet18", show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--threads", default=0, show_default=True, help="torch CPU threads (0: torch's default).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Also write the results as JSON here.")
def main(images: int, size: int, arch: str, batch_size: int, threads: int, device: str, out: Path | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    torch_device = resolve_device(device)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_synthetic_dataset(root / "data", train=images, valid=1, test=1, image_size=size, seed=0)
        samples = read_split(root / "data", "train")
        model = build_model(arch).eval()
        checkpoint = root / "model.pt"
        save_checkpoint(
            {
                "format": CHECKPOINT_FORMAT,
                "arch": arch,
                "num_classes": 2,
                "model": model.state_dict(),
                "mean": [0.2, 0.15, 0.25],
                "std": [0.25, 0.2, 0.3],
                "image_size": size,
            },
            checkpoint,
        )
        predict = lambda: predict_probabilities(checkpoint, samples, batch_size=batch_size, device=torch_device)
        predict()  # warm-up: builds the cache, first-call allocations
        batches = InputPipeline(
            samples,
            image_size=size,
            batch_size=batch_size,
            mean=[0.2, 0.15, 0.25],
            std=[0.25, 0.2, 0.3],
            device=torch_device,
            augment=False,
            shuffle=False,
            seed=0,
            cache_dir=get_settings().resolved_cache_dir,
        )
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        model = model.to(torch_device)
        maps_only = lambda: [grad_cam(model, batch.images) for batch in batches]
        whole = lambda: explain_samples(checkpoint, samples, batch_size=batch_size, device=torch_device)
        rows = {
            name: _timed(action)
            for name, action in (("predict", predict), ("explain: maps only", maps_only), ("explain: maps + overlay PNGs", whole))
        }
    results = {
        "images": images,
        "size": size,
        "arch": arch,
        "batch_size": batch_size,
        "device": str(torch_device),
        "torch_threads": torch.get_num_threads(),
        "ms_per_image": {name: {"wall": 1000 * wall / images, "cpu": 1000 * cpu / images} for name, (wall, cpu) in rows.items()},
    }
    click.echo(
        f"{arch} at {size} px, {images} images, batch {batch_size}, {torch_device}, {results['torch_threads']} torch threads"
    )
    click.echo(f"{'measure':32s} {'wall ms/image':>14s} {'CPU ms/image':>13s}")
    for name, times in results["ms_per_image"].items():
        click.echo(f"{name:32s} {times['wall']:14.1f} {times['cpu']:13.1f}")
    if out is not None:
        out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
