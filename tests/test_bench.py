"""`python -m bench.run --quick`: the whole benchmark on the CPU, small, with the CPU target checked."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from bench.run import main


def test_quick_benchmark_writes_the_table_and_meets_the_cpu_target(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(main, ["--quick", "--out", str(tmp_path)])
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
