"""A node's capped cache folder (core.common.cache_folder, CACHE_MAX_GB): least recently used entries go first,
an entry a job holds is never removed, and the decoded-image cache lives in it (its ImageCache holds its file)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from core.common import cache_folder
from core.engine.data.layouts import Sample
from core.engine.inputs.cache import load_image_cache


def entry(root: Path, name: str, size: int, age_s: float) -> Path:
    """A cache entry of `size` bytes last used `age_s` seconds ago."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def test_least_recently_used_entries_go_until_the_folder_fits(tmp_path):
    oldest, middle, newest = (entry(tmp_path, name, 400, age) for name, age in (("a.npy", 300), ("b.npy", 200), ("c.npy", 100)))
    fetched = entry(tmp_path, "checkpoints/0123.pt", 400, 50)  # the subfolder of fetched checkpoints counts too
    entry(tmp_path, ".b.npy.lock", 0, 0)  # lock files and temporaries are no entries
    evicted = cache_folder.evict(tmp_path, 1000)
    assert evicted.removed == ["a.npy", "b.npy"] and evicted.freed_bytes == 800 and evicted.kept_in_use == []
    assert not oldest.exists() and not middle.exists() and newest.exists() and fetched.exists()
    assert not (tmp_path / ".b.npy.lock").exists()  # its lock file goes with it
    assert cache_folder.evict(tmp_path, 1000).removed == [] and cache_folder.evict(tmp_path, None).removed == []


def test_an_entry_a_job_holds_is_never_evicted_and_a_hold_marks_it_used(tmp_path):
    held_path, other = entry(tmp_path, "held.npy", 500, 300), entry(tmp_path, "other.npy", 500, 200)
    held = cache_folder.hold(held_path)
    assert held is not None and held_path.stat().st_mtime > time.time() - 5  # just used now
    os.utime(held_path, (time.time() - 400, time.time() - 400))  # the oldest again, but held
    evicted = cache_folder.evict(tmp_path, 600)
    assert evicted.removed == ["other.npy"] and evicted.kept_in_use == ["held.npy"] and held_path.exists() and not other.exists()
    entry(tmp_path, "third.npy", 500, 100)
    evicted = cache_folder.evict(tmp_path, 100)
    assert evicted.removed == ["third.npy"] and evicted.kept_in_use == ["held.npy"] and held_path.exists()
    # The hold is a shared flock: another open of the lock file cannot take it exclusively while it lasts.
    probe = os.open(cache_folder.lock_path(held_path), os.O_RDWR)
    try:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            raise AssertionError("the held entry's lock was free")
        except BlockingIOError:
            pass
        held.close()  # the job ends (or its process dies: the kernel drops the lock the same way)
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(probe)
    assert cache_folder.evict(tmp_path, 100).removed == ["held.npy"]
    assert cache_folder.hold(held_path) is None and not cache_folder.lock_path(held_path).exists()


def test_the_entry_just_added_stays_even_over_the_cap(tmp_path):
    big = entry(tmp_path, "big.npy", 2000, 0)
    assert cache_folder.evict(tmp_path, 1000, keep=big).removed == [] and big.exists()


def split(folder: Path, count: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    samples = []
    for index in range(count):
        path = folder / f"cell_{index}.bmp"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(path=path, id=path.name, label=index % 2, source=f"{folder.name}.csv row {index + 2}"))
    return samples


def test_image_caches_over_the_cap_evict_the_oldest_unless_a_pipeline_still_reads_it(tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = load_image_cache(split(tmp_path / "one", 6, 1), 16, cache_dir=cache_dir)
    size = first.path.stat().st_size
    monkeypatch.setenv("CACHE_MAX_GB", str(1.5 * size / 1e9))  # room for one cache and a half
    second = load_image_cache(split(tmp_path / "two", 6, 2), 16, cache_dir=cache_dir)
    assert first.path.exists() and second.path.exists()  # the first is still read: kept over the cap
    first_path = first.path
    del first  # its pipeline is done with it
    third = load_image_cache(split(tmp_path / "three", 6, 3), 16, cache_dir=cache_dir)
    assert not first_path.exists() and third.path.exists()
    assert second.path.exists()  # held by `second`, though older than the cap allows
