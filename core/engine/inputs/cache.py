"""Decoded images: for a multi-pass split (training), every image decoded ONCE into one uint8
N×H×W×3 .npy file, read back as a memory map, so epochs never decode or resize again; for a
single pass (evaluate, predict) with no such file, each batch decoded straight into memory.

The cache file lives under cache_dir (never the data folder, which may be read-only) and is
named by a hash of the image size and each file's path, size and mtime: a changed data
folder gets a new cache, an unchanged one reuses it. It is written to a temporary file
and renamed into place, so a crash leaves no half cache and two builders cannot clash.

CACHE_DIR is a capped cache folder (core.common.cache_folder): an ImageCache holds its file while it
exists (the pipeline reading it keeps it), so the cap's least-recently-used eviction never takes a file
a running job reads (whose space would not be freed anyway while it is mapped).

Decoding runs in threads, as many as the machine has cores unless the DECODE_WORKERS setting
or a job's num_workers caps them: PIL releases the GIL while it decodes and resizes, so threads
scale without the start-up cost of processes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from core.common import cache_folder
from core.common.atomic import atomic_path
from core.common.errors import UserInputError
from core.engine.data.layouts import Sample, open_image
from core.engine.settings import engine_settings

log = logging.getLogger(__name__)

CACHE_FORMAT = "images-v1"  # bump when the decoding changes, so old caches are not reused


@dataclass(frozen=True)
class ImageCache:
    """A split's decoded images and how they were obtained."""

    path: Path
    images: np.ndarray  # read-only memmap, (N, size, size, 3) uint8, row i = samples[i]
    reused: bool  # True when an existing cache file was valid
    build_seconds: float  # decoding time; 0.0 when reused
    hold: cache_folder.Hold | None = None  # the file in use while this object lives: never evicted meanwhile

    @property
    def shape(self) -> tuple[int, ...]:
        return self.images.shape

    def take(self, positions: np.ndarray, out: np.ndarray) -> None:
        """Rows `positions` into out, one gather from the memmap."""
        # mode="clip" lets numpy write straight into out; positions are always in range.
        np.take(self.images, positions, axis=0, out=out, mode="clip")


@dataclass(frozen=True)
class StreamedImages:
    """A split decoded batch by batch, with no file written: for one pass over a split with no
    cache, decoding straight into the batch costs less than writing a full copy to disk and
    reading it back. Same decode_image, so the same pixels as a cache."""

    samples: list[Sample]
    image_size: int
    workers: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.samples), self.image_size, self.image_size, 3)

    def take(self, positions: np.ndarray, out: np.ndarray) -> None:
        """Decode the images at `positions` into out."""
        decode_into(out, [self.samples[p] for p in positions], self.image_size, self.workers)


def decode_workers(requested: int = 0) -> int:
    """Decoding threads: `requested` when above 0, else the machine's cores capped by DECODE_WORKERS."""
    if requested > 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cap = engine_settings().decode_workers
    return min(cores, cap) if cap else cores


def decode_image(sample: Sample, image_size: int) -> np.ndarray:
    """One image as a (size, size, 3) uint8 array, resized (antialiased bilinear) if it has another size."""
    image = open_image(sample)
    if image.size != (image_size, image_size):
        # PIL widens the bilinear filter when shrinking, so downscaling is antialiased.
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def decode_into(rows: np.ndarray, samples: Sequence[Sample], image_size: int, workers: int) -> None:
    """rows[i] = samples[i] decoded, in up to `workers` threads; the first bad image stops the rest."""

    def decode_row(index: int) -> None:
        rows[index] = decode_image(samples[index], image_size)

    if workers <= 1 or len(samples) < 2:
        for index in range(len(samples)):
            decode_row(index)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(samples)), thread_name_prefix="decode") as pool:
        tasks = [pool.submit(decode_row, index) for index in range(len(samples))]
        try:
            for task in tasks:
                task.result()  # re-raises a bad image's UserInputError here
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


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


def load_image_cache(samples: list[Sample], image_size: int, *, cache_dir: Path, num_workers: int = 0) -> ImageCache:
    """The decoded images of these samples: the existing cache if the files are unchanged, else built now."""
    path, existing = _existing_cache(samples, image_size, cache_dir)
    if existing is not None:
        return existing

    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        started = time.perf_counter()
        _build(path, samples, image_size, decode_workers(num_workers))
        build_seconds = time.perf_counter() - started
        held = cache_folder.hold(path)
        if held is not None:  # else another node process evicted it at once (a cap below its size): build again
            break
    _remove_older_versions(path)
    cache_folder.evict(Path(cache_dir), cache_folder.max_bytes_of(engine_settings().cache_max_gb), keep=path)
    log.info("image cache %s: decoded %d images in %.1f s", path.name, len(samples), build_seconds)
    images = np.load(path, mmap_mode="r")
    return ImageCache(path=path, images=images, reused=False, build_seconds=build_seconds, hold=held)


def open_split_images(
    samples: list[Sample], image_size: int, *, cache_dir: Path, num_workers: int = 0, single_pass: bool = False
) -> ImageCache | StreamedImages:
    """Where a pipeline reads its images: the cache (built now unless single_pass), or decoded per batch."""
    if not single_pass:
        return load_image_cache(samples, image_size, cache_dir=cache_dir, num_workers=num_workers)
    _, existing = _existing_cache(samples, image_size, cache_dir)
    if existing is not None:
        return existing
    return StreamedImages(samples=samples, image_size=image_size, workers=decode_workers(num_workers))


def _existing_cache(samples: list[Sample], image_size: int, cache_dir: Path) -> tuple[Path, ImageCache | None]:
    """Where these samples' cache lives, and the cache there if it matches the files (None: build or stream)."""
    if not samples:
        raise UserInputError("no images to load: the split is empty")
    path = Path(cache_dir) / cache_file_name(samples, image_size)
    held = cache_folder.hold(path)  # before it is opened: an eviction now would find it in use
    images = _open_existing(path, (len(samples), image_size, image_size, 3)) if held is not None else None
    if images is None:
        if held is not None:
            held.close()
        return path, None
    return path, ImageCache(path=path, images=images, reused=True, build_seconds=0.0, hold=held)


def _remove_older_versions(path: Path) -> None:
    """Delete caches of the same split built from older files: each can be gigabytes.

    A process still reading one keeps its memory map; the file's space is freed when it closes."""
    split_prefix = path.name.rsplit("-", 1)[0] + "-"
    for older in path.parent.glob(f"{split_prefix}*.npy"):
        if older != path:
            older.unlink(missing_ok=True)
            cache_folder.lock_path(older).unlink(missing_ok=True)


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
    _read_ahead(path)
    return images


def _read_ahead(path: Path) -> None:
    """Ask the kernel to start reading the whole file now, so the first pass's random gathers
    find it in memory instead of each waiting on the disk (a cache reused after a reboot)."""
    if not hasattr(os, "posix_fadvise"):
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(descriptor)


def _build(path: Path, samples: list[Sample], image_size: int, workers: int) -> None:
    """Decode into a private temporary file, flushed once, then rename it to path in one atomic step."""
    shape = (len(samples), image_size, image_size, 3)
    with atomic_path(path) as temporary:
        rows = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
        decode_into(rows, samples, image_size, workers)
        rows.flush()  # on disk before the name says it is complete
        del rows
