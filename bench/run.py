"""`python -m bench.run`: one command for the input-pipeline benchmark table.

Full run (one GPU): ResNet18/50/152, model-only ceilings, our training pipeline with and
without torch.compile, the lab's per-image DataLoader, prediction files → CSV against the
inference ceiling, cache build time, the CPU cost per image on one core, and "time to result"
(bench/time_to_result.py): the real commands and a queued job, cold and warm, against the
model-only time. `--quick` (a CPU, a few minutes): the same code at 64 px, resnet18, a few
steps, and the CPU target at 450 px. Prints the tables, writes results.json and results.md, and exits 1
when a check or goal it judges is missed.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import click
import torch

from bench import throughput, time_to_result
from bench.throughput import Setup
from bench.time_to_result import Workload
from core.common.errors import UserInputError
from core.engine.data.layouts import Sample, read_csv_samples, read_split
from core.engine.data.synth import write_synthetic_dataset
from core.engine.inputs.cache import decode_workers, load_image_cache
from core.engine.inputs.pipeline import InputPipeline, compute_mean_std, resolve_device
from core.engine.model.resnet import build_model

TRAIN_BATCH = {"resnet18": 128, "resnet50": 64, "resnet152": 64}
PREDICT_BATCH = 256
LAB_BATCH, LAB_WORKERS = 16, 16
SECTIONS = ("all", "pipeline", "time-to-result")
CPU_TARGET_SIZE = 450  # the CPU comparison always runs at the real image size
TARGETS = {
    "train_vs_ceiling": 0.9,
    "train_vs_lab_resnet18": 4.5,
    "predict_vs_ceiling": 0.8,
    "cpu_host_vs_lab_per_core": 5.0,
}


@dataclass(frozen=True)
class Plan:
    """What a run measures and at which sizes."""

    quick: bool
    archs: list[str]
    image_size: int
    counts: dict[str, int]  # images per split of the benchmark data folder
    distinct: int  # distinct synthetic images per split; the rest are hard links to them
    warmup_steps: int
    timed_steps: int
    cache_workers: int  # decoding threads for the cache build; 0: the machine's cores (core.engine.inputs.cache.decode_workers)
    compile_options: list[bool]
    train_batch: dict[str, int]
    predict_batch: int
    lab_batch: int
    lab_workers: int
    cpu_images: int  # 450 px images for the one-core comparison
    cpu_repeats: int
    ttr_counts: dict[str, int]  # images per split of the time-to-result folder (plan.counts on a full run)


def quick_plan() -> Plan:
    return Plan(
        quick=True,
        archs=["resnet18"],
        image_size=64,
        counts={"train": 32, "valid": 2, "test": 16},
        distinct=32,
        warmup_steps=1,
        timed_steps=2,
        cache_workers=0,
        compile_options=[False],
        train_batch={"resnet18": 8},
        predict_batch=8,
        lab_batch=8,
        lab_workers=0,
        cpu_images=48,
        cpu_repeats=3,
        ttr_counts={"train": 64, "valid": 16, "test": 32},
    )


def full_plan(archs: list[str], timed_steps: int) -> Plan:
    return Plan(
        quick=False,
        archs=archs,
        image_size=450,
        counts={"train": 7000, "valid": 500, "test": 2500},
        distinct=500,
        warmup_steps=10,
        timed_steps=timed_steps,
        cache_workers=0,
        compile_options=[False, True],
        train_batch=TRAIN_BATCH,
        predict_batch=PREDICT_BATCH,
        lab_batch=LAB_BATCH,
        lab_workers=LAB_WORKERS,
        cpu_images=128,
        cpu_repeats=3,
        ttr_counts={"train": 7000, "valid": 500, "test": 2500},
    )


@dataclass
class Results:
    """Every measured figure, and each target checked against them."""

    machine: dict
    measurements: list[dict] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    timings: list[dict] = field(default_factory=list)  # time to result: wall next to model-only seconds
    goals: list[dict] = field(default_factory=list)  # time to result: each goal met, missed or not judged

    def measure(self, name: str, images_per_s: float, **details) -> float:
        self.measurements.append({"measure": name, "images_per_s": round(images_per_s, 1), **details})
        click.echo(f"  {name:<44} {images_per_s:>10.1f} img/s  {details}")
        return images_per_s

    def check(self, name: str, ratio: float, target: float | None) -> None:
        """Record a ratio; target None: shown for information, or a GPU target that a CPU run cannot judge."""
        met = None if target is None else ratio >= target
        self.checks.append({"check": name, "ratio": round(ratio, 2), "target": target, "met": met})


def ensure_bench_data(folder: Path, plan: Plan, image_size: int) -> Path:
    """A lab-layout folder with plan.counts images (and the test truth in test_labels.csv):
    reused if complete, else synthesised.

    Only plan.distinct images per split are drawn (drawing is the slow part); the others are
    hard links to them, which decode at the same cost."""
    if _has_counts(folder, plan.counts):
        return folder
    source = folder.with_name(folder.name + "-distinct")
    distinct = {split: min(count, plan.distinct) for split, count in plan.counts.items()}
    if not _has_counts(source, distinct):
        shutil.rmtree(source, ignore_errors=True)  # synth writes only into an empty folder
        write_synthetic_dataset(source, **distinct, image_size=image_size, seed=0)
    shutil.rmtree(folder, ignore_errors=True)
    for split, count in plan.counts.items():
        (folder / "new_dataset" / split).mkdir(parents=True)
        rows = []
        # test.csv has no labels; the synthetic folder keeps the truth in test_labels.csv
        originals = read_csv_samples(source, "test_labels.csv", labelled=True) if split == "test" else read_split(source, split)
        for index in range(count):
            original = originals[index % len(originals)]
            target = folder / "new_dataset" / split / f"{index}.bmp"
            try:
                os.link(original.path, target)
            except OSError:  # a file system without hard links
                shutil.copyfile(original.path, target)
            rows.append(f"./new_dataset/{split}/{index}.bmp,{original.label}")
        (folder / f"{split}.csv").write_text("\n".join(["Path,label", *rows]) + "\n")
    test_rows = (folder / "test.csv").read_text().splitlines()
    (folder / "test_labels.csv").write_text("\n".join(test_rows) + "\n")
    (folder / "test.csv").write_text("\n".join(["Path"] + [row.rsplit(",", 1)[0] for row in test_rows[1:]]) + "\n")
    return folder


def _has_counts(folder: Path, counts: dict[str, int]) -> bool:
    try:
        truth = read_csv_samples(folder, "test_labels.csv", labelled=True)
        return len(truth) == counts["test"] and all(len(read_split(folder, split)) == count for split, count in counts.items())
    except UserInputError:
        return False


def measure_cache_build(results: Results, samples: list[Sample], image_size: int, cache_dir: Path, workers: int) -> None:
    """Decode the training split once into a fresh cache."""
    cache = load_image_cache(samples, image_size, cache_dir=cache_dir, num_workers=workers)
    results.measure(
        "cache build (decode once)",
        len(samples) / cache.build_seconds,
        images=len(samples),
        seconds=round(cache.build_seconds, 2),
        threads=decode_workers(workers),
    )


def measure_arch(results: Results, arch: str, plan: Plan, data: dict, device: torch.device, out: Path) -> None:
    """Ceilings and our pipeline for one architecture, then the lab's loader."""
    on_gpu = device.type == "cuda"  # bf16 + channels_last, and the targets are GPU targets
    setup = Setup(device=device, amp=on_gpu, warmup_steps=plan.warmup_steps, timed_steps=plan.timed_steps)
    common = dict(
        image_size=plan.image_size,
        mean=data["mean"],
        std=data["std"],
        device=device,
        seed=0,
        cache_dir=data["cache_dir"],
        channels_last=on_gpu,
    )
    ours = {
        compiled: measure_training(results, arch, plan, data["train"], common, setup, compiled=compiled)
        for compiled in plan.compile_options
    }
    measure_prediction(results, arch, plan, data["test"], common, setup, out / "predictions.csv")
    lab = measure_lab_training(results, arch, plan, data, device)
    if arch == "resnet18":  # eager against eager: compile is not what the target is about
        results.check("resnet18 train ours/lab", ours[False] / lab, TARGETS["train_vs_lab_resnet18"] if on_gpu else None)


def measure_training(
    results: Results, arch: str, plan: Plan, samples: list[Sample], common: dict, setup: Setup, *, compiled: bool
) -> float:
    """The training ceiling and our pipeline's rate on the same model object; returns ours."""
    batch = plan.train_batch[arch]
    model = throughput.prepare_model(build_model(arch), setup, compile_model=compiled)
    tag = dict(arch=arch, batch=batch, compile=compiled, bf16_channels_last=setup.amp)
    ceiling = results.measure(
        "train ceiling (synthetic tensors)", throughput.train_ceiling(model, batch, plan.image_size, setup), **tag
    )
    pipeline = InputPipeline(samples, batch_size=batch, augment=True, shuffle=True, drop_last=True, **common)
    ours = results.measure("train through our pipeline", throughput.train_through_pipeline(model, pipeline, setup), **tag)
    target = TARGETS["train_vs_ceiling"] if setup.device.type == "cuda" else None
    results.check(f"{arch} train ours/ceiling (compile={compiled})", ours / ceiling, target)
    return ours


def measure_prediction(
    results: Results, arch: str, plan: Plan, samples: list[Sample], common: dict, setup: Setup, out_csv: Path
) -> None:
    """The inference ceiling and files → CSV through our pipeline (best of 3 passes after a warm-up)."""
    model = throughput.prepare_model(build_model(arch), setup, compile_model=False)
    tag = dict(arch=arch, batch=plan.predict_batch, compile=False, bf16_channels_last=setup.amp)
    ceiling = results.measure(
        "inference ceiling (synthetic tensors)",
        throughput.inference_ceiling(model, plan.predict_batch, plan.image_size, setup),
        **tag,
    )
    pipeline = InputPipeline(samples, batch_size=plan.predict_batch, augment=False, shuffle=False, **common)
    passes = [throughput.predict_files_to_csv(model, pipeline, out_csv, setup) for _ in range(4)]
    predict = results.measure("predict files -> CSV (our pipeline)", max(passes[1:]), **tag)
    target = TARGETS["predict_vs_ceiling"] if setup.device.type == "cuda" else None
    results.check(f"{arch} predict/ceiling", predict / ceiling, target)


def measure_lab_training(results: Results, arch: str, plan: Plan, data: dict, device: torch.device) -> float:
    """The lab's way: fp32, per-image DataLoader workers, batch 16."""
    setup = Setup(device=device, amp=False, warmup_steps=plan.warmup_steps, timed_steps=plan.timed_steps)
    model = throughput.prepare_model(build_model(arch), setup, compile_model=False)
    rate = throughput.train_through_lab_loader(
        model,
        data["train"],
        batch_size=plan.lab_batch,
        num_workers=plan.lab_workers,
        mean=data["mean"],
        std=data["std"],
        setup=setup,
    )
    return results.measure(
        "train through the lab's DataLoader (fp32)",
        rate,
        arch=arch,
        batch=plan.lab_batch,
        workers=plan.lab_workers,
        compile=False,
        bf16_channels_last=False,
    )


def measure_cpu_per_core(results: Results, plan: Plan, data_root: Path, cache_dir: Path) -> None:
    """The CPU target: images per CPU-second of each input path on one core, at 450 px, best of a few."""
    folder = ensure_bench_data(data_root / f"cpu-{CPU_TARGET_SIZE}px", _cpu_plan(plan), CPU_TARGET_SIZE)
    samples = read_split(folder, "train")
    mean, std = compute_mean_std(samples, CPU_TARGET_SIZE, cache_dir=cache_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipeline = InputPipeline(
            samples,
            image_size=CPU_TARGET_SIZE,
            batch_size=16,
            mean=mean,
            std=std,
            device=torch.device("cpu"),
            augment=True,
            shuffle=True,
            seed=0,
            cache_dir=cache_dir,
        )
        lab = throughput.cpu_rate(throughput.lab_input_once(samples, mean, std), plan.cpu_repeats)
        host = throughput.cpu_rate(throughput.our_host_input_once(pipeline), plan.cpu_repeats)
        whole = throughput.cpu_rate(throughput.our_cpu_input_once(pipeline), plan.cpu_repeats)
    finally:
        torch.set_num_threads(threads)
    tag = dict(image_size=CPU_TARGET_SIZE, images=len(samples), threads=1, best_of=plan.cpu_repeats)
    results.measure(
        "CPU: lab per-image chain, per CPU-second", lab.images_per_cpu_s, wall_images_per_s=round(lab.images_per_s, 1), **tag
    )
    results.measure(
        "CPU: ours, host side (GPU does the rest)", host.images_per_cpu_s, wall_images_per_s=round(host.images_per_s, 1), **tag
    )
    results.measure(
        "CPU: ours, whole path on the CPU", whole.images_per_cpu_s, wall_images_per_s=round(whole.images_per_s, 1), **tag
    )
    results.check(
        "CPU per core: ours host side/lab", host.images_per_cpu_s / lab.images_per_cpu_s, TARGETS["cpu_host_vs_lab_per_core"]
    )
    results.check("CPU per core: ours whole path on CPU/lab", whole.images_per_cpu_s / lab.images_per_cpu_s, None)


def measure_pipeline(results: Results, plan: Plan, data_root: Path, cache_dir: Path, device: torch.device, out_dir: Path) -> None:
    """The throughput table: cache build, ceilings, our pipeline, the lab's loader, the CPU per core."""
    folder = ensure_bench_data(data_root / f"synthetic-{plan.image_size}px", plan, plan.image_size)
    train = read_split(folder, "train")
    measure_cache_build(results, train, plan.image_size, cache_dir, plan.cache_workers)
    mean, std = compute_mean_std(train, plan.image_size, cache_dir=cache_dir)
    data = {"train": train, "test": read_split(folder, "test"), "mean": mean, "std": std, "cache_dir": cache_dir}
    for arch in plan.archs:
        measure_arch(results, arch, plan, data, device, out_dir)
    measure_cpu_per_core(results, plan, data_root, cache_dir)


def measure_time_to_result(results: Results, plan: Plan, data_root: Path, device: torch.device, out_dir: Path) -> None:
    """Whole-process wall time of the commands and a queued job, cold and warm, against model-only time."""
    counts = plan.ttr_counts
    name = (
        f"synthetic-{plan.image_size}px"
        if counts == plan.counts
        else (f"synthetic-{plan.image_size}px-{counts['train']}-{counts['valid']}-{counts['test']}")
    )
    folder = ensure_bench_data(data_root / name, replace(plan, counts=counts), plan.image_size)
    work = Workload(
        train=counts["train"],
        valid=counts["valid"],
        test=counts["test"],
        image_size=plan.image_size,
        train_batch=plan.train_batch["resnet18"],
        predict_batch=plan.predict_batch,
        device=device.type,
    )
    # At least 10 timed steps: the model-only seconds scale every command's, so a 2-step ceiling is too noisy.
    setup = Setup(
        device=device, amp=device.type == "cuda", warmup_steps=max(plan.warmup_steps, 2), timed_steps=max(plan.timed_steps, 10)
    )
    click.echo("time to result (resnet18; cold: a new CACHE_DIR and a new process):")
    timings, goals, ceilings = time_to_result.measure_time_to_result(work, setup, folder, out_dir / "time-to-result")
    results.measure("time to result: train ceiling", ceilings.train, arch="resnet18", batch=work.train_batch)
    results.measure("time to result: inference ceiling", ceilings.inference, arch="resnet18", batch=work.predict_batch)
    results.timings += [asdict(timing) for timing in timings]
    results.goals += goals


def _cpu_plan(plan: Plan) -> Plan:
    counts = {"train": plan.cpu_images, "valid": 1, "test": 1}
    return Plan(**{**asdict(plan), "counts": counts, "distinct": plan.cpu_images})


def machine_description(device: torch.device) -> dict:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "gpu": gpu,
    }


def format_table(results: Results) -> str:
    """The results as a markdown table: measurements, then the targets."""
    lines = ["| measure | images/s | details |", "|---|---:|---|"]
    for row in results.measurements:
        details = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("measure", "images_per_s"))
        lines.append(f"| {row['measure']} | {row['images_per_s']:.1f} | {details} |")
    lines += ["", "| check | ratio | target | met |", "|---|---:|---:|---|"]
    for check in results.checks:
        target = "-" if check["target"] is None else check["target"]
        met = {True: "yes", False: "NO", None: "not judged"}[check["met"]]
        lines.append(f"| {check['check']} | {check['ratio']:.2f} | {target} | {met} |")
    if results.timings:
        lines += [
            "",
            "| time to result | state | wall s | model-only s | wall / model-only | details |",
            "|---|---|---:|---:|---:|---|",
        ]
        for row in results.timings:
            details = ", ".join(f"{k}={v}" for k, v in row["details"].items())
            ratio = row["wall_s"] / row["model_s"]
            lines.append(
                f"| {row['what']} | {row['state']} | {row['wall_s']:.1f} | {row['model_s']:.1f} | {ratio:.1f} | {details} |"
            )
        lines += ["", "| goal | measured | limit | met |", "|---|---:|---:|---|"]
        for goal in results.goals:
            met = {True: "yes", False: "NO", None: "not judged"}[goal["met"]]
            lines.append(f"| {goal['goal']} | {goal['measured']} | {goal['limit']} | {met} |")
    return "\n".join(lines)


@click.command()
@click.option("--quick", is_flag=True, help="CPU smoke run: 64 px, resnet18, a few steps, plus the CPU target at 450 px.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("bench-results"),
    show_default=True,
    help="Folder for results.json, results.md and the prediction CSV.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the synthetic data folders are kept and reused; default: OUT/data.",
)
@click.option("--arch", "archs", multiple=True, type=click.Choice(list(TRAIN_BATCH)), help="Full run only; default: all three.")
@click.option("--steps", type=int, default=50, show_default=True, help="Timed steps per measurement (full run).")
@click.option(
    "--section",
    type=click.Choice(SECTIONS),
    default="all",
    show_default=True,
    help="pipeline: the throughput table; time-to-result: the commands and a queued job, cold and warm.",
)
@click.option(
    "--test-images",
    type=click.IntRange(min=1),
    default=None,
    help="Test images of the time-to-result folder (default 2,500; --quick 32). The CPU goal is judged from 2,500 on.",
)
def main(
    quick: bool, out_dir: Path, data_dir: Path | None, archs: tuple[str, ...], steps: int, section: str, test_images: int | None
) -> None:
    """Measure the input pipeline against the model's ceiling and the lab's loader, and the time to result."""
    try:
        results = run(
            quick=quick,
            out_dir=out_dir,
            data_dir=data_dir,
            archs=list(archs) or list(TRAIN_BATCH),
            steps=steps,
            section=section,
            test_images=test_images,
        )
    except UserInputError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    missed = missed_targets(results)
    if missed:
        click.echo(f"missed: {'; '.join(missed)}", err=True)
        sys.exit(1)


def missed_targets(results: Results) -> list[str]:
    """The checks and goals judged and not met: the run's exit code is 1 when there is one (a CPU run
    does not judge the GPU ones)."""
    return [row["check"] for row in results.checks if row["met"] is False] + [
        row["goal"] for row in results.goals if row["met"] is False
    ]


def run(
    *,
    quick: bool,
    out_dir: Path,
    data_dir: Path | None,
    archs: list[str],
    steps: int,
    section: str = "all",
    test_images: int | None = None,
) -> Results:
    """The benchmark's sections; returns what it also writes to out_dir."""
    plan = quick_plan() if quick else full_plan(archs, steps)
    if test_images is not None:
        plan = replace(plan, ttr_counts={**plan.ttr_counts, "test": test_images})
    device = torch.device("cpu") if quick else resolve_device("cuda")
    if quick:
        torch.set_num_threads(1)  # a shared small CPU: one thread is steadier than oversubscribed cores
    out_dir.mkdir(parents=True, exist_ok=True)
    data_root = data_dir or out_dir / "data"
    cache_dir = out_dir / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)  # so the cache build below is really measured
    results = Results(machine=machine_description(device))
    started = time.perf_counter()
    click.echo(f"benchmark ({'quick, CPU' if quick else results.machine['gpu']}) -> {out_dir}")
    try:
        if section in ("all", "pipeline"):
            measure_pipeline(results, plan, data_root, cache_dir, device, out_dir)
        if section in ("all", "time-to-result"):
            measure_time_to_result(results, plan, data_root, device, out_dir)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)  # gigabytes on a full run
        shutil.rmtree(out_dir / "time-to-result", ignore_errors=True)  # its caches, runs and checkpoints
    results.machine["seconds"] = round(time.perf_counter() - started, 1)
    table = format_table(results)
    click.echo("\n" + table)
    (out_dir / "results.json").write_text(json.dumps(asdict(results), indent=2) + "\n")
    (out_dir / "results.md").write_text(f"# Benchmark {results.machine}\n\n{table}\n")
    return results


if __name__ == "__main__":
    main()
