"""What an evaluate or predict job produced, read from its recorded artifacts (through the artifact
store, so from any host) for the API and the job page: the evaluation or prediction summary, the
per-image table, the heat maps (members of the recorded explanations.zip) and thumbnails of the
evaluated cells. No path comes from a request: files are found by artifact name, images by row number
of a recorded table. A file the job recorded but the store lacks is a 409 naming it, never an empty answer."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from typing import TypeVar

from PIL import Image

from core.common.errors import NotFound, StateConflict, UserInputError
from core.engine.data.layouts import inside_path
from core.engine.evaluation.results import ExplainedImage, ImageResult, PredictionSummary
from core.engine.run_folder.layout import EVALUATION_JSON, EXPLANATIONS_CSV, EXPLANATIONS_ZIP, PER_IMAGE_CSV, PREDICTION_JSON
from core.engine.run_folder.spreadsheet_csv import read_csv_rows
from core.service import cv_jobs, data_folders
from core.service import jobs as job_service
from core.service.records import MODEL_KINDS, Artifact, Job, JobStatus
from web.api import schemas
from web.db import Session, db
from web.settings import app_settings

THUMBNAIL_PX = 96
# The ResNets (core.engine.model.resnet) halve the image five times before layer4's output, the map Grad-CAM
# explains (core.engine.evaluation.explain.EXPLAINED_LAYER): an N px image gives an (N/32)×(N/32) grid of cells.
LAYER4_STRIDE = 32
COARSE_CELLS = 4  # under 4×4 cells a map can only point at a part of the image, not at a structure in the cell
# What reading a recorded file raises when it is no longer what the job wrote: gone (OSError), cut
# short or edited (ValueError: JSON, pydantic, UTF-8), a column missing (KeyError), a broken zip.
UNREADABLE = (OSError, ValueError, KeyError, zipfile.BadZipFile)
T = TypeVar("T")


def heatmap_note(image_size: int | None) -> str | None:
    """What a heat map at this image size can show, when its layer4 grid is coarser than 4×4; else None."""
    if image_size is None:
        return None
    cells = max(1, image_size // LAYER4_STRIDE)
    if cells >= COARSE_CELLS:
        return None
    if cells == 1:
        return (
            f"At {image_size} px layer4 is a single cell: each map is one colour, so it says nothing about "
            "where in the image the evidence for ALL lies."
        )
    part = "quarter" if cells == 2 else "ninth"
    return (
        f"At {image_size} px layer4 is {cells}×{cells} cells: the map can only say which {part} of the image "
        "pushes towards ALL, not which structure in the cell does."
    )


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
        parent = job_service.find_job(session, parent_id)
        if parent is None:
            return None
        if (parent.params or {}).get("image_size"):
            return int(parent.params["image_size"])
        parent_id = parent.parent_id
    return None


def _artifact(job_id: int, name: str) -> Artifact | None:
    job_service.get_job(db(), job_id)
    return job_service.named_artifact(db(), job_id, name)


def parse_recorded(job_id: int, artifact: Artifact | None, read: Callable[[bytes], T]) -> T | None:
    """read(content) of a file the job recorded, None when it recorded none. A file the artifact store lacks
    (core.service.jobs.MissingArtifact), or that no longer reads as the job wrote it, is one line naming it
    (409), never a 500."""
    if artifact is None:
        return None
    content = job_service.read_recorded(artifact)
    try:
        return read(content)
    except UNREADABLE:
        raise StateConflict(
            f"job {job_id}: its {artifact.name} cannot be read as the job wrote it (cut short, changed "
            "or unreadable in the artifact store); run the job again to write it anew"
        ) from None


def _recorded_rows(job_id: int, name: str, read: Callable[[bytes], list[T]]) -> list[T]:
    """The rows `read` makes of the job's recorded CSV `name`; none when the job recorded none."""
    return parse_recorded(job_id, _artifact(job_id, name), read) or []


def _column(name: str) -> Callable[[bytes], list[str]]:
    """A reader of one column of a recorded CSV."""
    return lambda content: [row[name] for row in read_csv_rows(content)]


def job_results(job_id: int, kind: str) -> schemas.JobResults:
    """The evaluation (evaluation.json) or prediction (prediction.json) summary and the explained images."""
    evaluation = read_evaluation(job_id, _artifact(job_id, EVALUATION_JSON))
    prediction = parse_recorded(job_id, _artifact(job_id, PREDICTION_JSON), PredictionSummary.model_validate_json)
    explained = _recorded_rows(
        job_id,
        EXPLANATIONS_CSV,
        lambda content: [
            ExplainedImage.model_validate({**row, "true_label": row["true_label"] or None}) for row in read_csv_rows(content)
        ],
    )
    convention = (evaluation or prediction).explanation_convention if (evaluation or prediction) else None
    return schemas.JobResults(
        job_id=job_id,
        kind=kind,
        evaluation=evaluation,
        prediction=prediction,
        explained=explained,
        explanation_convention=convention,
    )


def results_error(job_id: int, kind: str, status: str) -> str | None:
    """Why a succeeded evaluate or predict job's results cannot be shown (a recorded file the artifact store
    lacks, or one that no longer reads as written): the job page says it in one line; None when they can."""
    if kind in MODEL_KINDS or status != JobStatus.succeeded:
        return None
    try:
        job_results(job_id, kind)
    except StateConflict as conflict:
        return str(conflict)
    return None


def read_evaluation(job_id: int, artifact: Artifact | None) -> schemas.Evaluation | None:
    """An evaluate job's recorded evaluation.json (headline metrics, clinical report); None until it wrote one."""
    return parse_recorded(job_id, artifact, schemas.Evaluation.model_validate_json)


def job_images(job_id: int) -> schemas.JobImages:
    """Every row of an evaluate job's per_image.csv, in the CSV's order."""
    images = _recorded_rows(
        job_id,
        PER_IMAGE_CSV,
        lambda content: [
            ImageResult.model_validate(
                {
                    **row,
                    "subject": row["subject"] or None,
                    "correct": row["correct"] == "1",
                    "explanation": row["explanation"] or None,
                }
            )
            for row in read_csv_rows(content)
        ],
    )
    return schemas.JobImages(job_id=job_id, images=images)


def explanation_png(job_id: int, index: int) -> bytes:
    """The heat map of row `index` (1-based) of the job's explanations.csv, from the recorded zip."""
    files = _recorded_rows(job_id, EXPLANATIONS_CSV, _column("file"))
    archive = _artifact(job_id, EXPLANATIONS_ZIP)
    if not 1 <= index <= len(files) or archive is None:
        raise NotFound(f"job {job_id} has no heat map {index}")

    def member(content: bytes) -> bytes | None:
        with zipfile.ZipFile(io.BytesIO(content)) as opened:
            return opened.read(files[index - 1]) if files[index - 1] in opened.namelist() else None

    png = parse_recorded(job_id, archive, member)
    if png is None:
        raise NotFound(f"heat map {index} of job {job_id} is missing from explanations.zip")
    return png


def thumbnail_png(job_id: int, data_dir: str, index: int) -> bytes:
    """A small PNG of the cell in row `index` (1-based) of the job's per_image.csv, read from its data
    folder when that lies under DATA_ROOTS (a CLI job's folder may lie anywhere)."""
    ids = _recorded_rows(job_id, PER_IMAGE_CSV, _column("ID"))
    if not 1 <= index <= len(ids):
        raise NotFound(f"job {job_id} has no image {index}")
    try:  # as for registering a folder: the web reads images only under DATA_ROOTS
        folder = data_folders.folder_under_roots(data_dir, app_settings().data_root_paths)
    except UserInputError:
        raise NotFound(f"job {job_id}: its data folder is not under a data root, so no thumbnails") from None
    relative = inside_path(ids[index - 1])
    if relative is None or not (folder / relative).is_file():
        raise NotFound(f"image {index} of job {job_id} is no longer in its data folder")
    try:  # the file itself under the roots after its links, as the folder is: a link placed since leads nowhere
        path = data_folders.path_under_roots(str(folder / relative), app_settings().data_root_paths, folder=False)
    except UserInputError:  # where such a link leads is not for the web to say
        raise NotFound(f"image {index} of job {job_id} is not a file of its data folder under the data roots") from None
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except OSError:
        raise UserInputError(f"image {index} of job {job_id}: {relative} cannot be read as an image") from None
    return buffer.getvalue()
