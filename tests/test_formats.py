"""One format per kind of number (issue 19 item 3, issue 20): sizes in decimal units, durations, metrics as
percentages with one decimal; the same text from Python (the templates' filters, the CLI) and, for the
percentages results.js draws, from live.js (run in node), on the job page, the cross-validation page and in the
CLI's job report. Sizes and durations are written by Python alone: the live pages swap in server-drawn regions."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from core.common.formats import human_bytes, human_duration, percent
from core.engine.progress import EpochRecord
from core.service import jobs
from core.service.db import get_sessionmaker
from core.service.run_folders import job_run_folder
from leukemia.cli import main as leukemia_cli
from tests.conftest import REPO, WEB_ADMIN
from tests.web_helpers import finished_train_job, login, queued_job

BIG = 131_127_700  # the "131127.7 kB" (bytes / 1024, labelled kB)
SHARES = [0, 0.0625, 0.00125, 1 / 3, 0.5333, 0.62, 0.99949, 1, None]


def test_the_python_formatters() -> None:
    assert [human_bytes(n) for n in (999, 1000, 999_949, 999_950, BIG, 10**9)] == [
        "999 B",
        "1.0 kB",
        "999.9 kB",
        "1.0 MB",
        "131.1 MB",
        "1.0 GB",
    ]
    assert human_bytes(None) == "—" and human_bytes(None, missing="-") == "-"
    assert [human_duration(s) for s in (9, 75, 3900, None, math.nan)] == ["9s", "1m 15s", "1h 05m", "—", "—"]
    assert [percent(v) for v in (0.5333, 1, 0.0625, None)] == ["53.3%", "100.0%", "6.3%", "—"]  # a tie goes up


def test_live_js_writes_what_python_writes() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: apt-get install -y nodejs")
    script = """
const vm = require("vm"), fs = require("fs");
const context = vm.createContext({});
vm.runInContext(fs.readFileSync(process.argv[1], "utf8"), context);
const input = JSON.parse(process.argv[2]);
console.log(JSON.stringify(vm.runInContext(`({
  percents: ${JSON.stringify(input.shares)}.map((v) => Live.percent(v)),
})`, context)));
"""
    given = json.dumps({"shares": SHARES})
    done = subprocess.run(
        [node, "-e", script, str(REPO / "web" / "static" / "live.js"), given],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    written = json.loads(done.stdout)
    assert written["percents"] == [percent(v) for v in SHARES]


def big_artifact(job_id: int) -> None:
    """A 131 MB (sparse) metrics file recorded on a finished job."""
    with get_sessionmaker().begin() as session:
        job = jobs.get_job(session, job_id)
        path = job_run_folder(job) / "big.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            handle.truncate(BIG)
        jobs.add_artifact(session, job_id, "metrics", path)


def test_job_page_and_cli_report_write_sizes_and_metrics_one_way(app, client, tmp_path) -> None:
    job_id = finished_train_job(str(tmp_path / "data"), accuracy=0.5333)
    big_artifact(job_id)
    assert login(client, *WEB_ADMIN).status_code == 302
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "metrics · 131.1 MB" in page and "131127.7" not in page and "125.1 MB" not in page  # not 1024-based
    assert "<td>53.3%</td>" in page and "<td>62.0%</td>" in page  # valid accuracy and weighted F1, as percentages
    assert "0.533" not in page and "0.62<" not in page

    result = CliRunner().invoke(leukemia_cli, ["job", str(job_id)])
    assert result.exit_code == 0, result.output
    assert "best valid accuracy 53.3%" in result.output and "ETA -" in result.output
    assert "131.1 MB" in result.output and "131127700" not in result.output
    assert " 62.0% " in result.output  # F1 in the epoch table
    listing = CliRunner().invoke(leukemia_cli, ["jobs"]).output
    assert "53.3%" in listing and "0.5333" not in listing


def test_cross_validation_page_shows_fold_metrics_as_percentages(app, client, tmp_path) -> None:
    from core.service import cv_jobs
    from tests.web_helpers import add_patients, synthetic_folder

    folder = synthetic_folder(tmp_path / "data")
    add_patients(folder, {0: ["h1", "h2"], 1: ["a1", "a2"]})
    with get_sessionmaker().begin() as session:
        cv, folds = cv_jobs.create_cross_validation(
            session, jobs.CrossValidationRequest(params={"data_dir": str(folder), "epochs": 1, "image_size": 32}, folds=2)
        )
        cv_id, fold_ids = cv.id, [job.id for job in folds]
    for job_id, accuracy in zip(fold_ids, (0.5333, 0.75)):
        with get_sessionmaker().begin() as session:
            jobs.claim_job(session, job_id, owner="w", host="h")
            jobs.record_epoch(
                session,
                job_id,
                EpochRecord(
                    epoch=1,
                    train_loss=0.5,
                    train_accuracy=0.6,
                    valid_loss=0.6,
                    valid_accuracy=accuracy,
                    valid_balanced_accuracy=0.5,
                    valid_f1=0.4444,
                    confusion=[[1, 1], [0, 2]],
                    lr=0.001,
                    seconds=1.0,
                    images_per_s=10.0,
                ),
            )
            jobs.finish_job(session, job_id, "w", "succeeded")
    assert login(client, *WEB_ADMIN).status_code == 302
    page = client.get(f"/cross-validations/{cv_id}").get_data(as_text=True)
    assert "<td>53.3%</td><td>50.0%</td><td>44.4%</td>" in page and "<td>75.0%</td>" in page
    assert "64.2% ± 15.3%" in page  # mean ± sample std of 53.33% and 75%
    assert "0.5333" not in page and "0.4444" not in page
    assert "64.2% ± 15.3%" in client.get("/cross-validations").get_data(as_text=True)


def test_a_job_page_waits_for_its_first_epoch_without_axes(app, client, tmp_path) -> None:
    assert login(client, *WEB_ADMIN).status_code == 302
    waiting = client.get(f"/jobs/{queued_job(str(tmp_path / 'data'))}").get_data(as_text=True)
    note = 'class="muted chart-waiting" data-waiting >Waiting for the first epoch'
    assert waiting.count(note) == 2  # loss and accuracy cards, shown
    done = client.get(f"/jobs/{finished_train_job(str(tmp_path / 'data'))}").get_data(as_text=True)
    assert done.count("data-waiting hidden>Waiting for the first epoch") == 2
