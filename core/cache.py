"""Decoded-image cache: every image of a split decoded ONCE into one uint8 N×H×W×3 .npy
file, read back as a memory map, so training epochs never decode or resize again.

The file lives under cache_dir (never the data folder, which may be read-only) and is
named by a hash of the image size and each file's path, size and mtime: a changed data
folder gets a new cache, an unchanged one reuses it. It is written to a temporary file
and renamed into place, so a crash leaves no half cache and two builders cannot clash.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.data import Sample, open_image
from core.errors import UserInputError

log = logging.getLogger(__name__)

CACHE_FORMAT = "images-v1"  # bump when the decoding changes, so old caches are not reused
ROWS_PER_TASK = 64  # images one worker decodes per task: few tasks, small messages


@dataclass(frozen=True)
class ImageCache:
    """A split's decoded images and how they were obtained."""

    path: Path
    images: np.ndarray  # read-only memmap, (N, size, size, 3) uint8, row i = samples[i]
    reused: bool  # True when an existing cache file was valid
    build_seconds: float  # decoding time; 0.0 when reused


def decode_image(sample: Sample, image_size: int) -> np.ndarray:
    """One image as a (size, size, 3) uint8 array, resized (antialiased bilinear) if it has another size."""
    image = open_image(sample)
    if image.size != (image_size, image_size):
        # PIL widens the bilinear filter when shrinking, so downscaling is antialiased.
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def cache_file_name(samples: list[Sample], image_size: int) -> str:
    """`<size>px-<hash of the paths>-<hash of each file's size and mtime>.npy`.

    The first hash names the split, the second its version: a changed file gives a new name,
    and older versions of the same split can be recognised and removed."""
    paths = hashlib.sha256(f"{CACHE_FORMAT}\n{image_size}\n".encode())
    versions = hashlib.sha256()
    for sample in samples:
        try:
            stat = sample.path.stat()
        except OSError as error:
            raise UserInputError(f"{sample.source}: cannot read image {sample.path}: {error.strerror}") from None
        paths.update(f"{sample.path}\n".encode())
        versions.update(f"{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return f"{image_size}px-{paths.hexdigest()[:16]}-{versions.hexdigest()[:16]}.npy"


def load_image_cache(
    samples: list[Sample], image_size: int, *, cache_dir: Path, num_workers: int = 0
) -> ImageCache:
    """The decoded images of these samples: the existing cache if the files are unchanged, else built now."""
    if not samples:
        raise UserInputError("no images to load: the split is empty")
    cache_dir = Path(cache_dir)
    path = cache_dir / cache_file_name(samples, image_size)
    shape = (len(samples), image_size, image_size, 3)
    images = _open_existing(path, shape)
    if images is not None:
        return ImageCache(path=path, images=images, reused=True, build_seconds=0.0)

    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _build(path, samples, image_size, num_workers)
    build_seconds = time.perf_counter() - started
    _remove_older_versions(path)
    log.info("image cache %s: decoded %d images in %.1f s", path.name, len(samples), build_seconds)
    images = np.load(path, mmap_mode="r")
    return ImageCache(path=path, images=images, reused=False, build_seconds=build_seconds)


def _remove_older_versions(path: Path) -> None:
    """Delete caches of the same split built from older files: each can be gigabytes.

    A process still reading one keeps its memory map; the file's space is freed when it closes."""
    split_prefix = path.name.rsplit("-", 1)[0] + "-"
    for older in path.parent.glob(f"{split_prefix}*.npy"):
        if older != path:
            older.unlink(missing_ok=True)


def _open_existing(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cache at path if it is there and has the expected shape; None means build it."""
    if not path.is_file():
        return None
    try:
        images = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        log.warning("image cache %s is unreadable; rebuilding it", path)
        return None
    if images.shape != shape or images.dtype != np.uint8:
        log.warning("image cache %s has shape %s, expected %s; rebuilding it", path, images.shape, shape)
        return None
    return images


def _build(path: Path, samples: list[Sample], image_size: int, num_workers: int) -> None:
    """Decode into a private temporary file, then rename it to path in one atomic step."""
    temporary = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp.npy")
    shape = (len(samples), image_size, image_size, 3)
    try:
        np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape).flush()
        if num_workers > 0:
            _decode_in_processes(temporary, samples, image_size, num_workers)
        else:
            _decode_rows(temporary, 0, samples, image_size)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _decode_in_processes(temporary: Path, samples: list[Sample], image_size: int, num_workers: int) -> None:
    """Each process decodes blocks of rows straight into the shared file; only paths travel."""
    # spawn: the caller may run threads (prefetching, torch), which fork would copy mid-lock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=num_workers, mp_context=context) as pool:
        tasks = [
            pool.submit(_decode_rows, temporary, start, samples[start : start + ROWS_PER_TASK], image_size)
            for start in range(0, len(samples), ROWS_PER_TASK)
        ]
        try:
            for task in tasks:
                task.result()  # re-raises a worker's UserInputError here
        except BaseException:
            pool.shutdown(cancel_futures=True)  # one bad image: stop decoding the rest
            raise


def _decode_rows(temporary: Path, start: int, samples: list[Sample], image_size: int) -> None:
    """Decode samples into rows start, start+1, ... of the temporary cache file."""
    images = np.load(temporary, mmap_mode="r+")
    for offset, sample in enumerate(samples):
        images[start + offset] = decode_image(sample, image_size)
    images.flush()
