"""Every bad input to train/finetune/evaluate/predict is one line on stderr and exit code 2,
never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from core.engine.model.checkpoint import save_checkpoint
from core.engine.model.resnet import build_model
from leukemia.cli import main

pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    """A garbage .pt, a truncated checkpoint, and a valid untrained resnet18 checkpoint in a run folder."""
    folder = tmp_path_factory.mktemp("checkpoints")
    run_folder = folder / "run18"
    checkpoint = {
        "format": 1,
        "arch": "resnet18",
        "num_classes": 2,
        "model": build_model("resnet18").state_dict(),
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "image_size": 32,
        "epoch": 1,
    }
    save_checkpoint(checkpoint, run_folder / "best.pt")
    (folder / "garbage.pt").write_bytes(b"\x00\x01 definitely not torch " * 50)
    (folder / "truncated.pt").write_bytes((run_folder / "best.pt").read_bytes()[:5000])
    return {"run18": run_folder, "garbage": folder / "garbage.pt", "truncated": folder / "truncated.pt"}


def cases(synth: Path, files: dict[str, Path], out: Path) -> list[tuple[list[str], str]]:
    """(arguments, text the one-line message must contain)."""
    data = ["--data", str(synth)]
    return [
        (["train", *data, "--arch", "resnet99", "--out", str(out)], "'--arch': 'resnet99' is not one of"),
        (["train", "--data", str(out / "nowhere"), "--out", str(out)], "data folder not found"),
        (["train", *data, "--class-weights", "1.2,x", "--out", str(out)], "class_weights: must be auto, none or two"),
        (["train", *data, "--class-weights", "1,2,3", "--out", str(out)], "class_weights:"),
        (["train", *data, "--device", "cuda", "--epochs", "1", "--out", str(out)], "device: cuda requested but no GPU"),
        (["train", *data, "--epochs", "0", "--out", str(out)], "epochs: Input should be greater than or equal to 1"),
        (["train", *data, "--epochs", "two", "--out", str(out)], "'--epochs': 'two' is not a valid integer"),
        (["train", *data], "out: give the run folder"),
        (["train", "--resume", str(out)], "has no last.pt"),
        (["train", "--resume", str(out), "--epochs", "3"], "resume: the run's parameters come from"),
        (
            ["finetune", "--from", str(files["run18"]), "--arch", "resnet50", *data, "--out", str(out)],
            "best.pt: architecture resnet18, expected resnet50",
        ),
        (["finetune", "--from", str(files["garbage"]), *data, "--out", str(out)], "garbage.pt: unreadable"),
        (["finetune", "--from", str(files["run18"]), "--checkpoint-choice", "last", *data, "--out", str(out)], "has no last.pt"),
        (["evaluate", "--checkpoint", str(files["truncated"]), *data, "--csv", "valid.csv"], "truncated.pt: unreadable"),
        (["evaluate", "--checkpoint", str(out / "none.pt"), *data], "none.pt: no such file"),
        (["evaluate", "--checkpoint", str(files["run18"]), *data, "--csv", "missing.csv"], "missing.csv: file not found"),
        (["evaluate", *data, "--csv", "valid.csv"], "checkpoint: give a run folder"),
        (["predict", *data, "--csv", "test.csv", "--out", str(out / "p.csv")], "checkpoints: give at least one"),
        (
            ["predict", "--checkpoint", str(files["garbage"]), *data, "--csv", "test.csv", "--out", str(out / "p.csv")],
            "garbage.pt: unreadable",
        ),
        (
            [
                "predict",
                "--checkpoint",
                str(files["run18"]),
                *data,
                "--csv",
                "test.csv",
                "--out",
                str(out / "p.csv"),
                "--device",
                "cuda",
            ],
            "device: cuda requested",
        ),
        (["train", *data, "--batch-size", "1", "--out", str(out)], "batch_size: Input should be greater than or equal to 2"),
        # An output that cannot be written: /proc takes no new folders or files.
        (["train", *data, "--epochs", "1", "--image-size", "32", "--out", "/proc/leukemia-run"], "cannot use /proc/leukemia-run"),
        (
            ["predict", "--checkpoint", str(files["run18"]), *data, "--csv", "test.csv", "--out", "/proc/leukemia.csv"],
            "cannot use /proc/leukemia.csv",
        ),
    ]


def test_bad_input_is_one_line_and_exit_2(synth_dir: Path, bad_files, tmp_path: Path) -> None:
    runner = CliRunner()
    for args, expected in cases(synth_dir, bad_files, tmp_path / "run"):
        result = runner.invoke(main, args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert isinstance(result.exception, SystemExit), (args, result.exception)  # not a traceback
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
        assert expected in lines[0], (args, lines[0])
    assert not (tmp_path / "run").exists()  # no run folder half-made by a refused command


def test_a_bad_setting_in_the_environment_is_one_line(settings_override) -> None:
    settings_override(HEARTBEAT_SECONDS="often")
    result = CliRunner().invoke(main, ["jobs"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.exception
    assert result.stderr.strip().splitlines() == [
        "error: bad setting in the environment: HEARTBEAT_SECONDS: Input should be a valid number, unable to parse string as a number"
    ]
