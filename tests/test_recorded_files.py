"""A job's recorded result files read back by the API and the compare page: one that no longer reads
as the job wrote it (cut short or edited on disk) is a one-line 409 naming the file, never
a 500, and the rest of the service keeps working."""

from __future__ import annotations

import zipfile

from core.service import jobs
from core.service.db import get_sessionmaker
from core.service.settings import get_settings
from tests.conftest import WEB_ADMIN, WEB_API_TOKEN
from tests.web_helpers import finished_train_job, login

AUTH = {"Authorization": f"Bearer {WEB_API_TOKEN}"}


def evaluate_job_with(folder_path: str, files: dict[str, str | bytes]) -> int:
    """A finished job whose run folder holds `files` (name → content), recorded as its artifacts."""
    job_id = finished_train_job(folder_path)
    run_folder = get_settings().resolved_artifacts_dir / f"job-{job_id}"
    with get_sessionmaker().begin() as session:
        for name, content in files.items():
            path = run_folder / name
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
            jobs.add_artifact(session, job_id, "evaluation", path)
        jobs.get_job(session, job_id).kind = "evaluate"  # its results are read as an evaluate job's
    return job_id


def assert_names(answer, status: int, file_name: str) -> None:
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.is_json and file_name in answer.json["error"] and "\n" not in answer.json["error"], answer.json


def test_files_that_no_longer_read_as_written_are_a_409_naming_them(app, client, folder_path) -> None:
    broken = evaluate_job_with(
        folder_path,
        {
            "evaluation.json": '{"accuracy": 0.9, "balanced_ac',  # cut short
            "per_image.csv": "name,label\nimage_1.bmp,1\n",  # ID and the other columns missing
            "explanations.csv": "ID,label,true_label,predicted,prob_1,file\nimage_1.bmp,ALL,1,1,0.9,map_1.png\n",
            "explanations.zip": b"PK\x03\x04 not a zip any more",
        },
    )
    assert_names(client.get(f"/api/jobs/{broken}/results", headers=AUTH), 409, "evaluation.json")
    assert_names(client.get(f"/api/jobs/{broken}/images", headers=AUTH), 409, "per_image.csv")
    assert_names(client.get(f"/api/jobs/{broken}/images/1/thumbnail", headers=AUTH), 409, "per_image.csv")
    assert_names(client.get(f"/api/jobs/{broken}/explanations/1", headers=AUTH), 409, "explanations.zip")

    assert login(client, *WEB_ADMIN).status_code == 302
    page = client.get(f"/compare?ids={broken},{finished_train_job(folder_path)}")
    assert page.status_code == 409 and "evaluation.json cannot be read" in page.get_data(as_text=True)
    assert client.get("/api/jobs", headers=AUTH).status_code == 200  # nothing else is held up


def test_a_heat_map_missing_from_an_intact_zip_is_a_404(app, client, folder_path) -> None:
    zip_path = get_settings().resolved_artifacts_dir / "maps.zip"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("map_1.png", b"\x89PNG first")
    job_id = evaluate_job_with(
        folder_path,
        {
            "explanations.csv": "ID,label,true_label,predicted,prob_1,file\na.bmp,ALL,1,1,0.9,map_1.png\n"
            "b.bmp,hem,0,0,0.1,map_2.png\n",
            "explanations.zip": zip_path.read_bytes(),
        },
    )
    first = client.get(f"/api/jobs/{job_id}/explanations/1", headers=AUTH)
    assert first.status_code == 200 and first.data == b"\x89PNG first"
    assert_names(client.get(f"/api/jobs/{job_id}/explanations/2", headers=AUTH), 404, "explanations.zip")


def test_a_recorded_file_gone_from_the_store_is_a_409_naming_it_never_an_empty_answer(app, client, folder_path):
    """Issue 24: a host lacking the files answered the results API with `evaluation: null` and `images: []`."""
    job_id = evaluate_job_with(
        folder_path,
        {
            "evaluation.json": '{"accuracy": 0.9}',
            "per_image.csv": "ID,subject,true_label,prob_all,predicted,correct,explanation\na.bmp,,1,0.9,1,1,\n",
        },
    )
    run_folder = get_settings().resolved_artifacts_dir / f"job-{job_id}"
    for name in ("evaluation.json", "per_image.csv"):
        (run_folder / name).unlink()
        answer = client.get(f"/api/jobs/{job_id}/{'results' if name.endswith('json') else 'images'}", headers=AUTH)
        assert answer.status_code == 409, answer.json
        assert answer.json["error"] == (
            f"job {job_id}: its {name} is recorded but missing from the artifact store (job-{job_id}/{name})"
        )
