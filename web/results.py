"""What an evaluate or predict job produced, read from its recorded artifacts for the API and the
job page: the evaluation or prediction summary, the per-image table, the heat maps (members of
the recorded explanations.zip) and thumbnails of the evaluated cells. No path comes from a
request: files are found by artifact name, images by row number of a recorded table."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from PIL import Image
from sqlalchemy.orm import Session

from core.common.errors import NotFound, UserInputError
from core.engine.data import inside_path
from core.engine.results import ExplainedImage, ImageResult, PredictionSummary
from core.engine.run_files import EVALUATION_JSON, EXPLANATIONS_CSV, EXPLANATIONS_ZIP, PER_IMAGE_CSV, PREDICTION_JSON
from core.engine.spreadsheet_csv import read_csv_rows
from core.service import cv_jobs, data_folders
from core.service import jobs as job_service
from core.service.db import get_sessionmaker
from core.service.records import Job
from core.service.settings import get_settings
from web import queries
from web.api import schemas

THUMBNAIL_PX = 96
# The ResNets (core.engine.models) halve the image five times before layer4's output, the map Grad-CAM
# explains (core.engine.explain.EXPLAINED_LAYER): an N px image gives an (N/32)×(N/32) grid of cells.
LAYER4_STRIDE = 32
COARSE_CELLS = 4  # under 4×4 cells a map can only point at a part of the image, not at a structure in the cell


def heatmap_note(image_size: int | None) -> str | None:
    """What a heat map at this image size can show, when its layer4 grid is coarser than 4×4; else None."""
    if image_size is None:
        return None
    cells = max(1, image_size // LAYER4_STRIDE)
    if cells >= COARSE_CELLS:
        return None
    if cells == 1:
        return (f"At {image_size} px layer4 is a single cell: each map is one colour, so it says nothing about "
                "where in the image the evidence for ALL lies.")
    part = "quarter" if cells == 2 else "ninth"
    return (f"At {image_size} px layer4 is {cells}×{cells} cells: the map can only say which {part} of the image "
            "pushes towards ALL, not which structure in the cell does.")


def explained_image_size(session: Session, job: Job) -> int | None:
    """The image size the model behind an evaluate or predict job was trained at: the nearest image_size up its
    chain of parents, or a cross-validation ensemble's fold jobs' (an evaluate job's own image_size does not
    change the checkpoint's); None when unknown."""
    if job.parent_id is None and job.cv_id is not None:
        folds = cv_jobs.fold_jobs(session, job.cv_id)
        return int(folds[0].params["image_size"]) if folds and folds[0].params.get("image_size") else None
    seen: set[int] = set()
    parent_id = job.parent_id
    while parent_id is not None and parent_id not in seen:
        seen.add(parent_id)
        parent = queries.find_job(session, parent_id)
        if parent is None:
            return None
        if (parent.params or {}).get("image_size"):
            return int(parent.params["image_size"])
        parent_id = parent.parent_id
    return None


def _artifact_file(job_id: int, name: str) -> Path | None:
    with get_sessionmaker().begin() as session:
        job_service.get_job(session, job_id)
        return job_service.named_artifact_file(session, job_id, name)


def _csv_rows(path: Path | None) -> list[dict[str, str]]:
    return [] if path is None else read_csv_rows(path)


def job_results(job_id: int, kind: str) -> schemas.JobResults:
    """The evaluation (evaluation.json) or prediction (prediction.json) summary and the explained images."""
    evaluation, prediction_path = read_evaluation(_artifact_file(job_id, EVALUATION_JSON)), _artifact_file(job_id, PREDICTION_JSON)
    prediction = PredictionSummary.model_validate_json(prediction_path.read_bytes()) if prediction_path else None
    explained = [ExplainedImage.model_validate({**row, "true_label": row["true_label"] or None})
                 for row in _csv_rows(_artifact_file(job_id, EXPLANATIONS_CSV))]
    convention = (evaluation or prediction).explanation_convention if (evaluation or prediction) else None
    return schemas.JobResults(job_id=job_id, kind=kind, evaluation=evaluation, prediction=prediction,
                              explained=explained, explanation_convention=convention)


def read_evaluation(path: Path | None) -> schemas.Evaluation | None:
    """An evaluate job's recorded evaluation.json (headline metrics, clinical report); None until it wrote one."""
    return schemas.Evaluation.model_validate_json(path.read_bytes()) if path else None


def job_images(job_id: int) -> schemas.JobImages:
    """Every row of an evaluate job's per_image.csv, in the CSV's order."""
    rows = _csv_rows(_artifact_file(job_id, PER_IMAGE_CSV))
    images = [ImageResult.model_validate({**row, "subject": row["subject"] or None, "correct": row["correct"] == "1",
                                          "explanation": row["explanation"] or None}) for row in rows]
    return schemas.JobImages(job_id=job_id, images=images)


def explanation_png(job_id: int, index: int) -> bytes:
    """The heat map of row `index` (1-based) of the job's explanations.csv, from the recorded zip."""
    rows = _csv_rows(_artifact_file(job_id, EXPLANATIONS_CSV))
    archive_path = _artifact_file(job_id, EXPLANATIONS_ZIP)
    if not 1 <= index <= len(rows) or archive_path is None:
        raise NotFound(f"job {job_id} has no heat map {index}")
    with zipfile.ZipFile(archive_path) as archive:
        try:
            return archive.read(rows[index - 1]["file"])
        except KeyError:
            raise NotFound(f"heat map {index} of job {job_id} is missing from explanations.zip") from None


def thumbnail_png(job_id: int, data_dir: str, index: int) -> bytes:
    """A small PNG of the cell in row `index` (1-based) of the job's per_image.csv, read from its data
    folder when that lies under DATA_ROOTS (a CLI job's folder may lie anywhere)."""
    rows = _csv_rows(_artifact_file(job_id, PER_IMAGE_CSV))
    if not 1 <= index <= len(rows):
        raise NotFound(f"job {job_id} has no image {index}")
    try:  # as for registering a folder: the web reads images only under DATA_ROOTS
        folder = data_folders.folder_under_roots(data_dir, get_settings().data_root_paths)
    except UserInputError:
        raise NotFound(f"job {job_id}: its data folder is not under a data root, so no thumbnails") from None
    relative = inside_path(rows[index - 1]["ID"])
    path = folder / relative if relative else None
    if path is None or not path.is_file():
        raise NotFound(f"image {index} of job {job_id} is no longer in its data folder")
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except OSError:
        raise UserInputError(f"image {index} of job {job_id}: {relative} cannot be read as an image") from None
    return buffer.getvalue()
