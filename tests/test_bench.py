"""Smoke tests of `python -m bench.run`: the pipeline section on the CPU (its CPU target checked) and the
time-to-result section's commands on tiny inputs (the benchmark itself: docs/benchmarks.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.run import main


# Slow tier (CI): a benchmark's smoke run, 8 s; the README's quick tier stays under its 10 minutes.
@pytest.mark.slow
def test_quick_benchmark_writes_the_table_and_meets_the_cpu_target(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(main, ["--quick", "--section", "pipeline", "--out", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    results = json.loads((tmp_path / "results.json").read_text())
    measured = {row["measure"] for row in results["measurements"]}
    assert {
        "train ceiling (synthetic tensors)",
        "train through our pipeline",
        "predict files -> CSV (our pipeline)",
        "train through the lab's DataLoader (fp32)",
        "CPU: lab per-image chain, per CPU-second",
        "CPU: ours, host side (GPU does the rest)",
        "CPU: ours, whole path on the CPU",
    } <= measured
    assert all(row["images_per_s"] > 0 for row in results["measurements"])
    checks = {check["check"]: check for check in results["checks"]}
    cpu_target = checks["CPU per core: ours host side/lab"]
    assert cpu_target["target"] == 5.0 and cpu_target["met"], cpu_target
    assert checks["resnet18 train ours/lab"]["met"] is None  # a GPU target is not judged on a CPU
    predictions = (tmp_path / "predictions.csv").read_text().splitlines()
    assert predictions[0] == "ID,label" and len(predictions) == 1 + 16
    assert "| check | ratio | target | met |" in (tmp_path / "results.md").read_text()
    assert not (tmp_path / "cache").exists()  # the benchmark's caches are removed afterwards


# Slow tier (CI): a benchmark's smoke run, 16 s; the README's quick tier stays under its 10 minutes.
@pytest.mark.slow
def test_time_to_result_runs_every_command_cold_and_warm_and_judges_its_goals(
    tmp_path: Path, monkeypatch, settings_override
) -> None:
    """The time-to-result section's commands (bench/time_to_result.py) on 8 tiny images for 2 epochs,
    each run in this process instead of a new one (the whole section, with new processes and the
    queued job on a real worker, is the benchmark: `python -m bench.run --quick --section
    time-to-result`, which exits 1 when a goal it judges is missed)."""
    from dataclasses import replace

    import torch

    from bench import time_to_result
    from bench.run import ensure_bench_data, quick_plan
    from bench.throughput import Setup
    from leukemia.cli import main as leukemia_main

    def in_process(arguments: list[str], environment: dict[str, str]) -> float:
        """`leukemia ARGUMENTS` through click in this process, with the command's home and cache."""
        settings_override(LEUKEMIA_HOME=environment["LEUKEMIA_HOME"], CACHE_DIR=environment["CACHE_DIR"])
        started = time.perf_counter()
        outcome = CliRunner().invoke(leukemia_main, arguments)
        assert outcome.exit_code == 0, (arguments, outcome.output)
        return time.perf_counter() - started

    monkeypatch.setattr(time_to_result, "EPOCHS", 2)  # the fewest the epoch goal can compare
    counts = {"train": 8, "valid": 4, "test": 4}
    folder = ensure_bench_data(tmp_path / "data", replace(quick_plan(), counts=counts, distinct=8), 32)
    work = time_to_result.Workload(**counts, image_size=32, train_batch=4, predict_batch=4, device="cpu")
    setup = Setup(device=torch.device("cpu"), amp=False, warmup_steps=1, timed_steps=2)
    ceilings = time_to_result.measure_ceilings(work, setup)
    root = tmp_path / "time-to-result"
    timings = time_to_result.run_commands(work, ceilings.seconds(work), folder, root, launch=in_process)

    commands = ("train", "finetune", "predict --tta", "evaluate")
    assert [(t.what, t.state) for t in timings] == [(what, state) for what in commands for state in ("cold", "warm")]
    assert all(t.wall_s > 0 and t.model_s > 0 for t in timings)
    assert len(timings[0].details["epoch_seconds"]) == 2 and timings[0].details["best_pt_mb"] > 0
    goals = {goal["goal"]: goal["met"] for goal in time_to_result.command_goals(timings, work, root)}
    assert goals["predictions identical cold and warm"] is True
    assert goals["best.pt holds no optimizer state (last.pt keeps it for resume)"] is True
    assert goals["train cold: wall <= 1.5 x model-only + 10 s"] is None  # a GPU goal, not judged on a CPU
    assert all(goals[name] is None for name in goals if "lab-size" in name)  # 4 test images are not lab-size


def test_store_bench_times_both_stores_and_the_uploads(tmp_path: Path, s3_server, monkeypatch) -> None:
    """bench/store_bench.py's two parts on tiny inputs against the session's S3 server: one folder-store and one
    S3-store worker each run a 1-epoch job (the benchmark: `python -m bench.store_bench`, docs/benchmarks.md)."""
    from bench.store_bench import checkpoint_uploads, queued_training

    monkeypatch.delenv("ARTIFACTS_URL", raising=False)
    bucket = s3_server.new_bucket()
    uploads = checkpoint_uploads(tmp_path, s3_server, bucket, 1)
    assert set(uploads) == {"resnet18", "resnet50"} and uploads["resnet50"]["bytes"] > uploads["resnet18"]["bytes"] > 40e6
    assert all(found["median_upload_s"] > 0 and found["median_sha256_s"] > 0 for found in uploads.values())
    assert {key.rsplit("/", 2)[1] for key in s3_server.keys(bucket)} == {"resnet18", "resnet50"}
    params = {
        "arch": "resnet18",
        "epochs": 1,
        "image_size": 32,
        "batch_size": 8,
        "device": "cpu",
        "seed": 0,
        "train": 16,
        "valid": 8,
    }
    training = queued_training(tmp_path / "queued", s3_server, bucket, params, 1)
    assert set(training["median_wall_s"]) == {"folder", "s3"} and training["ratio"] > 0
    assert any(key.startswith("bench/jobs/") and key.endswith("/last.pt") for key in s3_server.keys(bucket))
