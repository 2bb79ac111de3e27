"""`python -m bench.run --quick`: the whole benchmark on the CPU, small, with the CPU target checked."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from bench.run import main


def test_quick_benchmark_writes_the_table_and_meets_the_cpu_target(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(main, ["--quick", "--section", "pipeline", "--out", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    results = json.loads((tmp_path / "results.json").read_text())
    measured = {row["measure"] for row in results["measurements"]}
    assert {"train ceiling (synthetic tensors)", "train through our pipeline", "predict files -> CSV (our pipeline)",
            "train through the lab's DataLoader (fp32)", "CPU: lab per-image chain, per CPU-second",
            "CPU: ours, host side (GPU does the rest)", "CPU: ours, whole path on the CPU"} <= measured
    assert all(row["images_per_s"] > 0 for row in results["measurements"])
    checks = {check["check"]: check for check in results["checks"]}
    cpu_target = checks["CPU per core: ours host side/lab"]
    assert cpu_target["target"] == 5.0 and cpu_target["met"], cpu_target
    assert checks["resnet18 train ours/lab"]["met"] is None  # a GPU target is not judged on a CPU
    predictions = (tmp_path / "predictions.csv").read_text().splitlines()
    assert predictions[0] == "ID,label" and len(predictions) == 1 + 16
    assert "| check | ratio | target | met |" in (tmp_path / "results.md").read_text()
    assert not (tmp_path / "cache").exists()  # the benchmark's caches are removed afterwards


def test_quick_time_to_result_runs_the_real_commands_and_a_queued_job_cold_and_warm(tmp_path: Path, monkeypatch) -> None:
    """The time-to-result section at tiny sizes: every command and the queued job, cold and warm, and each goal."""
    import dataclasses

    import bench.run

    tiny = dataclasses.replace(bench.run.quick_plan(), ttr_counts={"train": 16, "valid": 4, "test": 8})
    monkeypatch.setattr(bench.run, "quick_plan", lambda: tiny)
    outcome = CliRunner().invoke(main, ["--quick", "--section", "time-to-result", "--out", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    results = json.loads((tmp_path / "results.json").read_text())
    timings = {(row["what"], row["state"]): row for row in results["timings"]}
    commands = ("train", "finetune", "predict --tta", "evaluate", "queued train job")
    assert set(timings) == {(what, state) for what in commands for state in ("cold", "warm")}
    for row in timings.values():
        assert row["wall_s"] > row["model_s"] > 0  # a whole process or job includes its model time
    assert len(timings[("train", "cold")]["details"]["epoch_seconds"]) == 3
    goals = {goal["goal"]: goal for goal in results["goals"]}
    assert goals["predictions identical cold and warm"]["met"] is True
    assert goals["train cold: wall <= 1.5 x model-only + 10 s"]["met"] is None  # a GPU goal, not judged on a CPU
    lab_size = [name for name in goals if "lab-size" in name]
    assert lab_size and all(goals[name]["met"] is None for name in lab_size)  # 8 test images are not lab-size
    assert all(goals[name]["met"] in (True, False) for name in goals if name.startswith("queued"))
    assert "| time to result | state |" in (tmp_path / "results.md").read_text()
    assert not (tmp_path / "time-to-result").exists()  # runs, caches and checkpoints are removed afterwards
