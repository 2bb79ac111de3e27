"""Calibrate and check core.engine.model.limits on the CPU: bytes autograd saves for backward per image pixel,
forward FLOPs per image pixel, and the real peak memory of one training step against the estimate.

    .venv/bin/python -m bench.memory_estimate            # the table in docs/queue.md ("Limits")

How it measures:
- saved activations: `torch.autograd.graph.saved_tensors_hooks` counts each distinct storage saved
  for backward during one forward pass in train mode (the parameters themselves excluded), fp32;
- forward FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one forward pass;
- real peak: a fresh subprocess builds the model, Adam and a batch, reads its resident set size,
  runs one training step (forward, backward, Adam step) and reads its peak resident set size
  (`ru_maxrss`); measured peak = the weights (resident before) + the step's growth, against the estimate.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

from core.engine.model.resnet import build_model

POINTS = [
    ("resnet18", 64, 8),
    ("resnet18", 128, 8),
    ("resnet50", 64, 8),
    ("resnet50", 128, 8),
    ("resnet152", 64, 4),
    ("resnet152", 128, 4),
]


def saved_bytes(arch: str, image_size: int, batch: int) -> int:
    model = build_model(arch).train()
    seen = {p.untyped_storage().data_ptr() for p in model.parameters()}
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(torch.randn(batch, 3, image_size, image_size)).sum()
    return total


def forward_flops(arch: str, image_size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(arch).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, image_size, image_size))
    return counter.get_total_flops()


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def step_growth(arch: str, image_size: int, batch: int) -> dict[str, int]:
    """In this (fresh) process: resident set before one training step, and the peak during it."""
    torch.set_num_threads(1)
    model = build_model(arch).train()
    optimizer = torch.optim.Adam(model.parameters())
    images, labels = torch.randn(batch, 3, image_size, image_size), torch.randint(0, 2, (batch,))
    before = resident_bytes()
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"before": before, "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        arch, size, batch = args.child
        print(json.dumps(step_growth(arch, int(size), int(batch))))
        return
    from core.engine.model.limits import ACTIVATION_BYTES_PER_PIXEL, PARAMETERS, training_memory_bytes

    torch.set_num_threads(1)
    print("| arch | px | batch | saved for backward | per image pixel (table) | estimate | measured peak | measured / estimate |")
    print("|---|---|---|---|---|---|---|---|")
    for arch, size, batch in POINTS:
        saved = saved_bytes(arch, size, batch)
        child = subprocess.run(
            [sys.executable, "-m", "bench.memory_estimate", "--child", arch, str(size), str(batch)],
            capture_output=True,
            text=True,
            check=True,
        )
        growth = json.loads(child.stdout)
        estimate = training_memory_bytes(arch, size, batch)
        peak = 4 * PARAMETERS[arch] + growth["peak"] - growth["before"]  # the weights were resident before the step
        print(
            f"| {arch} | {size} | {batch} | {saved / 2**20:.1f} MiB | {saved / (batch * size * size):.0f} B "
            f"({ACTIVATION_BYTES_PER_PIXEL[arch]}) | {estimate / 2**20:.1f} MiB | {peak / 2**20:.1f} MiB | {peak / estimate:.2f} |"
        )
    for arch in ("resnet18", "resnet50", "resnet152"):
        parameters = sum(p.numel() for p in build_model(arch).parameters())
        flops = {size: forward_flops(arch, size) for size in (64, 128)}
        print(
            f"{arch}: {parameters} parameters; forward FLOPs per image pixel "
            + ", ".join(f"{f / (s * s):.0f} at {s} px" for s, f in flops.items())
        )


if __name__ == "__main__":
    main()
