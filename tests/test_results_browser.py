"""Evaluate and predict jobs end to end on a real `leukemia worker`, driven through the JSON API
and looked at in headless Chromium: metrics with intervals, ROC / PR / calibration plots, the
heat-map gallery, the per-image list with thumbnails, a predict page without loss curves, and
the compare page's ROC overlay. Screenshots under test-output/screenshots for review."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request

import pytest

from tests.conftest import REPO
from tests.polling import wait_for
from tests.test_browser import ADMIN, browser  # noqa: F401  (the shared Chromium fixture)
from tests.web_helpers import log_in_page, web_and_worker

pytestmark = pytest.mark.timeout(600)

SCREENSHOTS = REPO / "test-output" / "screenshots"
TOKEN = "results-token"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from core.engine.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("results")
    data_root = root / "data"
    write_synthetic_dataset(data_root / "synth", train=24, valid=12, test=8, image_size=32, seed=4)
    settings = {"DATA_ROOTS": str(data_root), "ADMIN_USERNAME": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1], "API_TOKEN": TOKEN}
    with web_and_worker(root, settings) as url:
        yield {"url": url, "data": data_root / "synth", "logs": root}


def api(base: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{base}/api{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def finished(base: str, job_id: int, seconds: float = 300) -> dict:
    def row() -> dict | None:
        job = api(base, "GET", f"/jobs/{job_id}")[1]
        return job if job["finished"] else None

    return wait_for(row, seconds, f"job {job_id} to finish", interval=1)


def submit(base: str, kind: str, params: dict, parent_id: int | None = None) -> int:
    status, job = api(base, "POST", "/jobs", {"kind": kind, "params": params, "parent_id": parent_id})
    assert status == 201, job
    return job["id"]


def test_results_pages_end_to_end(service, browser) -> None:  # noqa: F811
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    base, data = service["url"], str(service["data"])
    assert api(base, "POST", "/data-folders", {"path": data})[0] == 201
    common = {"data_dir": data, "device": "cpu"}
    # Bad input is a 400 naming the field, before anything is queued.
    for params, field in (
        ({"threshold_from": "valid", "target_sensitivity": 1.5}, "target_sensitivity"),
        ({"explain": "-3"}, "explain"),
        ({"threshold": 1.5}, "threshold"),
    ):
        status, body = api(base, "POST", "/jobs", {"kind": "evaluate", "params": {**common, **params}})
        assert (status, body["field"]) == (400, field), body

    train_id = submit(base, "train", {**common, "epochs": 2, "image_size": 32, "batch_size": 4})
    assert finished(base, train_id)["status"] == "succeeded"
    chosen_id = submit(
        base,
        "evaluate",
        {**common, "csv": "valid.csv", "explain": "2", "threshold_from": "valid", "target_sensitivity": 0.9},
        parent_id=train_id,
    )
    fixed_id = submit(base, "evaluate", {**common, "csv": "test_labels.csv", "threshold": 0.5}, parent_id=train_id)
    predict_id = submit(base, "predict", {**common, "csv": "test.csv", "explain": "3"}, parent_id=train_id)
    for job_id in (chosen_id, fixed_id, predict_id):
        job = finished(base, job_id)
        assert (job["status"], job["error"]) == ("succeeded", None), job

    results = api(base, "GET", f"/jobs/{chosen_id}/results")[1]
    evaluation = results["evaluation"]
    assert evaluation["threshold"]["source"] == "valid" and evaluation["threshold"]["recorded_in"]
    assert evaluation["clinical"]["metrics"]["sensitivity"]["value"] >= 0.9
    assert len(results["explained"]) == evaluation["explained"] >= 2
    # The predict job finds the threshold the evaluate job recorded in the parent's checkpoint.
    prediction = api(base, "GET", f"/jobs/{predict_id}/results")[1]["prediction"]
    assert prediction["threshold"]["source"] == "recorded"
    assert prediction["threshold"]["value"] == evaluation["threshold"]["value"]
    assert sum(prediction["class_counts"].values()) == 8 and prediction["explained"] == 3
    # The threshold was written into the parent's best.pt: its artifact row has the new size and sha256.
    best = next(a for a in api(base, "GET", f"/jobs/{train_id}/artifacts")[1]["artifacts"] if a["name"] == "best.pt")
    request = urllib.request.Request(
        f"{base}/api/jobs/{train_id}/artifacts/{best['id']}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        content = response.read()
    assert (len(content), hashlib.sha256(content).hexdigest()) == (best["size_bytes"], best["sha256"])
    images = api(base, "GET", f"/jobs/{chosen_id}/images")[1]["images"]
    assert len(images) == 12 and sum(1 for image in images if image["explanation"]) == evaluation["explained"]

    page = browser.new_page(viewport={"width": 1366, "height": 900})
    errors: list[str] = []  # failed requests (the browser's own favicon probe aside) and script errors
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "response",
        lambda response: (
            errors.append(f"{response.status} {response.url}")
            if response.status >= 400 and not response.url.endswith("/favicon.ico")
            else None
        ),
    )
    pictures: list[tuple[str, int, str]] = []  # heat maps and thumbnails the page loaded
    page.on(
        "response",
        lambda response: (
            pictures.append((response.url, response.status, response.headers.get("content-type", "")))
            if "/explanations/" in response.url or response.url.endswith("/thumbnail")
            else None
        ),
    )
    try:
        log_in_page(page, base, *ADMIN)

        page.goto(f"{base}/jobs/{chosen_id}")
        page.wait_for_selector("#roc-chart .main-svg")
        page.wait_for_selector("#calibration-chart .main-svg")
        page.wait_for_selector("#gallery figure img")
        page.wait_for_selector("#images-table tbody tr img.thumb")
        assert page.locator("#loss-chart").count() == 0  # no empty training curves on an evaluate page
        assert page.locator("#clinical-table tbody tr").count() == 6
        assert "95% intervals: percentile bootstrap" in page.locator("#interval-note").inner_text()
        assert "ALL logit" in page.locator("#convention").inner_text()
        page.wait_for_load_state("networkidle")
        shown = [p for p in pictures if "/explanations/" in p[0]]
        assert len(shown) == len(results["explained"]) and pictures, pictures
        assert all(status == 200 and kind == "image/png" for _, status, kind in pictures), pictures
        page.select_option("#image-filter", "wrong")
        wrong = sum(1 for image in images if not image["correct"])
        assert page.locator("#images-table tbody tr").count() == wrong
        page.select_option("#image-filter", "all")
        page.screenshot(path=str(SCREENSHOTS / "evaluate-job.png"), full_page=True)

        page.goto(f"{base}/jobs/{predict_id}")
        page.wait_for_selector("#histogram-chart .main-svg")
        page.wait_for_selector("#gallery figure img")
        assert page.locator("#loss-chart").count() == 0 and page.locator("#first-rows tbody tr").count() == 8
        page.screenshot(path=str(SCREENSHOTS / "predict-job.png"), full_page=True)

        page.goto(f"{base}/compare?ids={chosen_id}&ids={fixed_id}")
        page.wait_for_selector("#compare-roc .main-svg")
        assert page.locator("#compare-roc .scatterlayer .trace").count() == 3  # the diagonal and two runs
        page.screenshot(path=str(SCREENSHOTS / "compare-roc.png"), full_page=True)
        assert not errors, errors
    finally:
        page.close()
        for name in ("web", "worker"):
            print(f"--- {name} log (tail) ---\n" + "\n".join((service["logs"] / f"{name}.log").read_text().splitlines()[-25:]))
