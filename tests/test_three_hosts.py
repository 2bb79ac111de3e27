"""Hosts that share no disk (issue 24): three processes standing for a web host W and two worker hosts A and B,
each with its own LEUKEMIA_HOME and no shared folder, on one PostgreSQL, one Redis and a real S3-compatible
server (`rclone serve s3`, tests/s3_server.py) as the artifact store.

A trains a model; B evaluates and predicts from it (its checkpoint fetched from the store into B's cache);
W serves the prediction CSV, the checkpoint, the plots and the heat maps; A is killed with SIGKILL in the
middle of a training job and B resumes it at the right epoch, every epoch recorded once (rows and
metrics.csv); a delete frees the objects; the results page of a job whose object was removed says so in
one line."""

from __future__ import annotations

import csv
import hashlib
import http.cookiejar
import io
import json
import os
import re
import secrets
import signal
import urllib.error
import urllib.parse
import urllib.request
import zipfile

import pytest

from tests.conftest import create_postgres_database, drop_postgres_database, postgres_url
from tests.s3_server import S3Server
from tests.test_worker import WorkerProcess, stop_workers, wait_for
from tests.web_helpers import MACHINE_SETTINGS, web_server

TOKEN = "three-hosts-token"
ADMIN = ("admin", "three-hosts-password")
PREFIX = "leukemia"  # ARTIFACTS_URL is s3://<bucket>/leukemia
TINY = {"image_size": 32, "batch_size": 8, "device": "cpu", "seed": 0}
LONG_EPOCHS = 6


class Api:
    """W's JSON API with the bearer token, and its pages through a logged-in session."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.pages = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes, dict]:
        request = urllib.request.Request(
            f"{self.base}{path}",
            method=method,
            data=json.dumps(body).encode() if body else None,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, answer.read(), dict(answer.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)

    def json(self, method: str, path: str, body: dict | None = None, expect: int = 200) -> dict:
        status, content, _ = self.call(method, path, body)
        assert status == expect, f"{method} {path}: {status} {content[:500]!r}"
        return json.loads(content)

    def submit(self, kind: str, params: dict, queue: str, parent_id: int | None = None) -> int:
        body = {"kind": kind, "params": params, "queue": queue, **({"parent_id": parent_id} if parent_id else {})}
        return self.json("POST", "/api/jobs", body, expect=201)["id"]

    def job(self, job_id: int) -> dict:
        return self.json("GET", f"/api/jobs/{job_id}")

    def epochs(self, job_id: int) -> list[int]:
        return [row["epoch"] for row in self.json("GET", f"/api/jobs/{job_id}/metrics")["epochs"]]

    def artifacts(self, job_id: int) -> dict[str, dict]:
        return {a["name"]: a for a in self.json("GET", f"/api/jobs/{job_id}/artifacts")["artifacts"]}

    def download(self, job_id: int, name: str) -> bytes:
        """A recorded file of the job through W, checked against its recorded size and sha256."""
        artifact = self.artifacts(job_id)[name]
        status, content, headers = self.call("GET", f"/api/jobs/{job_id}/artifacts/{artifact['id']}")
        assert status == 200, f"download {name} of job {job_id}: {status} {content[:300]!r}"
        assert int(headers["Content-Length"]) == len(content) == artifact["size_bytes"]
        assert hashlib.sha256(content).hexdigest() == artifact["sha256"]
        return content

    def log_in(self) -> None:
        page = self.pages.open(f"{self.base}/login", timeout=60).read().decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode({"username": ADMIN[0], "password": ADMIN[1], "csrf_token": token}).encode()
        self.pages.open(f"{self.base}/login", data=form, timeout=60).read()

    def page(self, path: str) -> str:
        return self.pages.open(f"{self.base}{path}", timeout=60).read().decode()


@pytest.fixture()
def hosts(tmp_path, s3_server: S3Server):
    """The shared services (a fresh PostgreSQL database, a Redis database, a bucket), a data folder at the same
    path for every host (under DATA_ROOTS, as NFS or a copy would put it), and each host's environment."""
    from core.engine.data.synth import write_synthetic_dataset

    database, bucket = create_postgres_database(), s3_server.new_bucket()
    data = write_synthetic_dataset(tmp_path / "data" / "lab", train=24, valid=8, test=8, image_size=32, seed=0).out_dir
    shared = {
        "DATABASE_URL": postgres_url(database),
        "BROKER_URL": f"redis://127.0.0.1:6379/{1 + secrets.randbelow(15)}",
        "DATA_ROOTS": str(tmp_path / "data"),
        "HEARTBEAT_SECONDS": "1",
        "STALE_AFTER_SECONDS": "6",
        "API_TOKEN": TOKEN,
        "SECRET_KEY": "three-hosts-secret",
        "ADMIN_USERNAME": ADMIN[0],
        "ADMIN_PASSWORD": ADMIN[1],
        "OMP_NUM_THREADS": "1",
        "LEUKEMIA_TEST_THREADS": "1",
        **s3_server.settings(bucket, PREFIX),
    }
    base = {key: value for key, value in os.environ.items() if key not in MACHINE_SETTINGS}

    def environment(name: str) -> dict[str, str]:
        return {**base, **shared, "LEUKEMIA_HOME": str(tmp_path / name / "home"), "PYTHONUNBUFFERED": "1"}

    queue = secrets.token_hex(3)
    yield {
        "data": data,
        "bucket": bucket,
        "settings": shared,
        "env": environment,
        "root": tmp_path,
        "queues": {"train": f"train-{queue}", "long": f"long-{queue}", "score": f"score-{queue}"},
    }
    drop_postgres_database(database)
    import redis

    redis.Redis.from_url(shared["BROKER_URL"]).flushdb()


def wait_succeeded(api: Api, job_id: int, timeout: float, *workers: WorkerProcess) -> dict:
    job = wait_for(lambda: (found := api.job(job_id))["finished"] and found, timeout, f"job {job_id} to finish", *workers)
    assert job["status"] == "succeeded", job
    return job


@pytest.mark.timeout(900)
def test_web_and_two_worker_hosts_share_only_the_store(hosts, s3_server, tmp_path):
    queues, data, bucket, root = hosts["queues"], str(hosts["data"]), hosts["bucket"], hosts["root"]
    started: list[WorkerProcess] = []
    (root / "W").mkdir()
    with web_server(root / "W", hosts["settings"]) as base:  # LEUKEMIA_HOME root/W/home
        api = Api(base)
        assert api.json("POST", "/api/data-folders", {"path": data, "name": "lab"}, expect=201)["report"]["ok"]
        try:
            a = WorkerProcess(hosts["env"]("A"), [queues["train"], queues["long"]], "A", root)
            started.append(a)
            trained = api.submit("train", {"data_dir": data, "epochs": 2, **TINY}, queues["train"])
            assert wait_succeeded(api, trained, 240, a)["worker_host"] == a.hostname

            # A long training run on A, killed with SIGKILL once it is inside its epochs.
            long = api.submit("train", {"data_dir": data, "epochs": LONG_EPOCHS, **TINY}, queues["long"])
            wait_for(lambda: api.epochs(long), 240, f"job {long} to record an epoch on A", a)
            a.kill(signal.SIGKILL)
            recorded_at_kill = api.epochs(long)
            assert api.job(long)["status"] == "running" and recorded_at_kill == list(range(1, len(recorded_at_kill) + 1))
            assert len(recorded_at_kill) < LONG_EPOCHS, "the run ended before A was killed; give it more epochs"

            # B: evaluate and predict from A's model, and take the killed run over once A is found lost.
            b = WorkerProcess(hosts["env"]("B"), [queues["score"], queues["long"]], "B", root)
            started.append(b)
            evaluated = api.submit(
                "evaluate",
                {"data_dir": data, "csv": "valid.csv", "explain": "2", "device": "cpu"},
                queues["score"],
                parent_id=trained,
            )
            predicted = api.submit(
                "predict", {"data_dir": data, "csv": "test.csv", "device": "cpu"}, queues["score"], parent_id=trained
            )
            for job_id in (evaluated, predicted):
                assert wait_succeeded(api, job_id, 240, b)["worker_host"] == b.hostname
            resumed = wait_succeeded(api, long, 300, b)
        finally:
            stop_workers(*started)

        # B resumed where A stored it: after the epochs A recorded, or the one A stored but had not recorded.
        assert (resumed["worker_host"], resumed["attempts"]) == (b.hostname, 2)
        note = re.fullmatch(
            rf"attempt 2 on {re.escape(b.hostname)} resumed at epoch (\d+) from last.pt", resumed["attempt_note"] or ""
        )
        assert note, resumed["attempt_note"]
        assert int(note.group(1)) - 1 in (len(recorded_at_kill), len(recorded_at_kill) + 1), (note.group(0), recorded_at_kill)
        assert api.epochs(long) == list(range(1, LONG_EPOCHS + 1))  # every epoch once
        rows = list(csv.DictReader(io.StringIO(api.download(long, "metrics.csv").decode())))
        assert [int(row["epoch"]) for row in rows] == list(range(1, LONG_EPOCHS + 1))

        # W serves every file of A's and B's jobs from the store.
        best = api.download(trained, "best.pt")
        assert hashlib.sha256(best).hexdigest() in {p.stem for p in (root / "B" / "home" / "cache" / "checkpoints").glob("*.pt")}
        assert api.download(trained, "loss.png").startswith(b"\x89PNG")
        predictions = list(csv.DictReader(io.StringIO(api.download(predicted, "predictions.csv").decode())))
        assert len(predictions) == 8 and {row["label"] for row in predictions} <= {"0", "1"}
        results = api.json("GET", f"/api/jobs/{evaluated}/results")
        assert results["evaluation"]["accuracy"] is not None and results["explained"]
        assert api.json("GET", f"/api/jobs/{evaluated}/images")["images"]
        status, heat_map, _ = api.call("GET", f"/api/jobs/{evaluated}/explanations/1")
        assert status == 200 and heat_map.startswith(b"\x89PNG")
        assert zipfile.ZipFile(io.BytesIO(api.download(evaluated, "explanations.zip"))).namelist()
        # A run's scratch copy goes once it is stored; A's killed run left its own, which nobody reads.
        b_scratch = root / "B" / "home" / "scratch" / "jobs"
        assert not b_scratch.exists() or not any(b_scratch.iterdir())
        assert [p.name.split("-")[0] for p in (root / "A" / "home" / "scratch" / "jobs").iterdir()] == [str(long)]
        assert not any((root / host / "home" / "artifacts").exists() for host in ("W", "A", "B"))  # no folder store used

        # Delete frees the objects.
        trained_objects = s3_server.keys(bucket, f"{PREFIX}/jobs/{trained}-")
        assert {key.rsplit("/", 1)[-1] for key in trained_objects} >= {"best.pt", "last.pt", "metrics.csv", "loss.png"}
        deleted = api.json("DELETE", f"/api/jobs/{trained}")
        assert deleted["freed_bytes"] == sum(trained_objects.values()) > 0
        assert s3_server.keys(bucket, f"{PREFIX}/jobs/{trained}-") == {}

        # An object removed behind the service's back: the results page and the API say so in one line.
        gone = next(key for key in s3_server.keys(bucket, f"{PREFIX}/jobs/{evaluated}-") if key.endswith("/evaluation.json"))
        s3_server.client().delete_object(Bucket=bucket, Key=gone)
        line = (
            f"job {evaluated}: its evaluation.json is recorded but missing from the artifact store "
            f"({gone.removeprefix(PREFIX + '/')})"
        )
        status, content, _ = api.call("GET", f"/api/jobs/{evaluated}/results")
        assert (status, json.loads(content)["error"]) == (409, line)
        api.log_in()
        assert f'id="results-error" role="alert">{line}</p>' in api.page(f"/jobs/{evaluated}")
