"""The one writer (and reader) of the CSV files meant for people, who open them in a spreadsheet:
per_image.csv, explanations.csv, subjects.csv and oof.csv (one fold's, the whole cross-validation's).

Their text cells come from the data (image IDs, subjects), and a spreadsheet runs a cell that
starts with =, +, -, @, a tab or a carriage return as a formula (CSV injection: `=1+2.bmp` shows 3,
worse ones reach out). Such a cell is written with a leading apostrophe, which spreadsheets take
as "text" and do not show (the OWASP rule). A cell that itself starts with an apostrophe gets one
more, so the rule can be undone: reading strips exactly one leading apostrophe, and every value
comes back as it was (the dashboard finds a thumbnail by the ID it reads back).

Not written here, on purpose: the submission CSV (predictions.csv, `leukemia predict --out`),
whose IDs a grader matches character for character, so they stay exact (`leukemia check` warns of
image names that start like a formula); the data CSVs `leukemia check --write-csv` writes, which
the service reads back as paths; and metrics.csv and confusion.csv, which hold only numbers."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from core.common.atomic import write_text_atomic

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ESCAPE = "'"


def formula_like(text: str) -> bool:
    """Whether a spreadsheet would run this cell as a formula."""
    return text.startswith(FORMULA_STARTS)


def safe_cell(value: Any) -> Any:
    """A text cell as written: an apostrophe before one that starts like a formula or with an
    apostrophe; anything else (numbers, empty) unchanged."""
    if isinstance(value, str) and (formula_like(value) or value.startswith(ESCAPE)):
        return ESCAPE + value
    return value


def restored_cell(text: str) -> str:
    """A cell as read back: the value that was written."""
    return text[1:] if text.startswith(ESCAPE) else text


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The CSV of header and rows, each text cell made safe."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([safe_cell(value) for value in row] for row in rows)
    return buffer.getvalue()


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Write the CSV atomically; returns its text (explanations.csv also goes into a zip)."""
    text = csv_text(header, rows)
    write_text_atomic(path, text)
    return text


def read_csv_rows(source: Path | bytes) -> list[dict[str, str]]:
    """The rows of a CSV written by write_csv (a file, or its bytes as read from the artifact store), each
    cell as it was before it was made safe."""
    with (
        io.StringIO(source.decode("utf-8"), newline="") if isinstance(source, bytes) else Path(source).open(newline="") as handle
    ):
        return [{key: restored_cell(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def frame_rows(frame: pd.DataFrame, float_format: str) -> list[list[Any]]:
    """A pandas table's rows for write_csv: floats in float_format, missing values empty."""

    def cell(value: Any) -> Any:
        if value is None or (isinstance(value, float) and value != value):  # NaN
            return ""
        return float_format % value if isinstance(value, float) else value

    return [[cell(value) for value in row] for row in frame.astype(object).itertuples(index=False)]


def read_csv_frame(source: Path | bytes) -> pd.DataFrame:
    """A CSV written by write_csv (a file, or its bytes) as a pandas table, text cells restored."""
    frame = pd.read_csv(io.BytesIO(source) if isinstance(source, bytes) else source)
    for column in frame.columns:
        if pd.api.types.is_object_dtype(frame[column]) or pd.api.types.is_string_dtype(frame[column]):
            frame[column] = frame[column].map(lambda value: restored_cell(value) if isinstance(value, str) else value)
    return frame
