"""Shared fixtures. Engineers append fixtures here with small edits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata" / "cnmc2019"

# Two cores on this machine and in CI: one intra-op thread keeps parallel test
# processes (workers, servers) from fighting over them.
torch.set_num_threads(int(os.environ.get("LEUKEMIA_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    """The 71 real C-NMC images (../shared/realdata/cnmc2019)."""
    if not (REALDATA / "labels.csv").is_file():
        pytest.fail(f"real C-NMC images not found at {REALDATA}; CI must place shared/ beside the clone")
    return REALDATA
