"""A third-party client generated from /api/openapi.json drives the real service.

openapi-python-client generates a Python client from the live document, with no warning allowed
(a schema it cannot process is dropped with a warning, and its operations with it). A script that
imports only that client and the standard library then registers a data folder, trains, predicts
from the trained job, polls both to finished and downloads the predictions CSV from a live
`leukemia web` and `leukemia worker`."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.web_helpers import web_and_worker

pytestmark = pytest.mark.timeout(420)
TOKEN = "client-test-token"

# Runs in a fresh interpreter: the generated package `leukemia_client`, httpx (its dependency) and the
# standard library only. It prints the predictions CSV.
CLIENT_SCRIPT = """
import sys, time
import httpx
from leukemia_client import AuthenticatedClient
from leukemia_client.api.data_folders import register_data_folder
from leukemia_client.api.jobs import download_job_artifact, get_job, list_job_artifacts, submit_job
from leukemia_client.models import (DataFolder, DataFolderRegistration, Job, JobArtifacts, JobSubmission,
                                    JobSubmissionKind, JobStatus, PredictParams, TrainParams)

url, token, folder_path = sys.argv[1:4]
client = AuthenticatedClient(base_url=url, token=token, raise_on_unexpected_status=True, timeout=httpx.Timeout(120))


def finished(job: Job) -> Job:
    deadline = time.monotonic() + 300
    while not job.finished:
        assert time.monotonic() < deadline, f"job {job.id} still {job.status.value}"
        time.sleep(0.5)
        job = get_job.sync(job.id, client=client)
    assert job.status == JobStatus.SUCCEEDED, (job.id, job.status, job.error)
    return job


folder = register_data_folder.sync(client=client, body=DataFolderRegistration(path=folder_path, name="synth"))
assert isinstance(folder, DataFolder) and folder.report["ok"] is True, folder
train = submit_job.sync(client=client, body=JobSubmission(
    kind=JobSubmissionKind.TRAIN,
    params=TrainParams(data_dir=folder.path, epochs=1, image_size=32, batch_size=4)))
assert isinstance(train, Job) and train.status == JobStatus.QUEUED, train
finished(train)
predict = submit_job.sync(client=client, body=JobSubmission(
    kind=JobSubmissionKind.PREDICT, parent_id=train.id,
    params=PredictParams(data_dir=folder.path, csv="test.csv")))
predict = finished(predict)
artifacts = list_job_artifacts.sync(predict.id, client=client)
assert isinstance(artifacts, JobArtifacts), artifacts
csv_file = next(a for a in artifacts.artifacts if a.name == "predictions.csv")
download = download_job_artifact.sync(predict.id, csv_file.id, client=client)
sys.stdout.write(download.payload.read().decode())
assert "core" not in sys.modules and "web" not in sys.modules  # no project code was used
"""


def generate_client(document: dict, out: Path) -> str:
    """Run openapi-python-client on the document; its whole output, for the no-warning check."""
    (out / "openapi.json").write_text(json.dumps(document))
    (out / "config.yaml").write_text("post_hooks: []\n")  # no formatter run: the client is used, not read
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(out / "openapi.json"),
            "--meta",
            "none",
            "--output-path",
            str(out / "leukemia_client"),
            "--config",
            str(out / "config.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_a_generated_client_registers_trains_predicts_and_downloads(tmp_path):
    from core.engine.data.synth import write_synthetic_dataset

    data_root = tmp_path / "data"
    write_synthetic_dataset(data_root / "synth", train=16, valid=8, test=8, image_size=32, seed=5)
    with web_and_worker(tmp_path, {"DATA_ROOTS": str(data_root), "API_TOKEN": TOKEN}) as url:
        with urllib.request.urlopen(f"{url}/api/openapi.json", timeout=10) as response:
            document = json.load(response)
        output = generate_client(document, tmp_path)
        assert "warning" not in output.lower() and "unable to" not in output.lower(), output
        generated = tmp_path / "leukemia_client" / "api"
        operations = {path.stem for path in generated.glob("*/*.py") if path.stem != "__init__"}
        declared = {op["operationId"] for item in document["paths"].values() for op in item.values()}
        snake = {re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower() for operation_id in declared}
        assert operations == snake and "submit_sweep" in operations, (operations, declared)  # every one generated

        env = {**os.environ, "PYTHONPATH": str(tmp_path)}
        run = subprocess.run(
            [sys.executable, "-c", CLIENT_SCRIPT, url, TOKEN, str(data_root / "synth")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=360,
        )
    assert run.returncode == 0, run.stderr + (tmp_path / "worker.log").read_text()[-3000:]
    predictions = list(csv.DictReader(io.StringIO(run.stdout)))
    tests = list(csv.DictReader((data_root / "synth" / "test.csv").open()))
    assert len(predictions) == len(tests) == 8 and set(predictions[0]) == {"ID", "label"}
    assert {row["label"] for row in predictions} <= {"0", "1"}
