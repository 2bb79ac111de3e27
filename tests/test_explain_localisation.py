"""Smoke tests of the Grad-CAM localisation benchmark (`python -m bench.explain_localisation`, the
measurement itself: docs/benchmarks.md): its concentration measure on maps whose answer is known,
and the whole command on a few tiny cells (1 epoch), so the benchmark's code path keeps working."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench.explain_localisation import checks, concentration, main


def test_concentration_is_one_for_a_flat_map_and_the_inverse_share_for_a_map_on_the_cell() -> None:
    cells = np.zeros((2, 8, 8), dtype=bool)
    cells[:, 2:4, 2:6] = True  # 8 of 64 pixels: an eighth of the image
    flat = np.ones((2, 8, 8))
    on_cell = cells.astype(float)
    off_cell = 1.0 - on_cell
    assert concentration(flat, cells) == pytest.approx([1.0, 1.0])
    assert concentration(on_cell, cells) == pytest.approx([8.0, 8.0])
    assert concentration(off_cell, cells) == pytest.approx([0.0, 0.0])


def test_a_missing_figure_fails_its_check() -> None:
    """No cell called ALL: the concentrations are nan, and every check on them fails, not passes."""
    from bench.explain_localisation import Config

    figures = {
        "valid_accuracy": 1.0,
        "cell_share": 0.07,
        "called_all": 0,
        "concentration": float("nan"),
        "flipped_concentration": float("nan"),
        "untrained_concentration": float("nan"),
    }
    met = {row["check"].split(":")[0]: row["met"] for row in checks(figures, Config())}
    assert met == {
        "the model learned the task": True,
        "most pixels are background": True,
        "cells called ALL with a map >= 25 of 64": False,
        "maps on the cell": False,
        "control, maps flipped": False,
        "control, an untrained network": False,
    }


def test_the_benchmark_runs_on_a_few_tiny_cells_and_its_exit_code_says_whether_every_check_held(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(
        main, ["--train", "32", "--valid", "8", "--epochs", "1", "--size", "64", "--threads", "1", "--out", str(tmp_path)]
    )
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), outcome.output
    results = json.loads((tmp_path / "localisation.json").read_text())
    assert results["config"] == {"train": 32, "valid": 8, "epochs": 1, "image_size": 64, "threads": 1}
    assert 0.04 < results["figures"]["cell_share"] < 0.12
    assert len(results["checks"]) == 6
    assert outcome.exit_code == (0 if all(row["met"] for row in results["checks"]) else 1), outcome.output
    assert "| check | measured | met |" in (tmp_path / "localisation.md").read_text()
