"""Decoded-image cache and InputPipeline: values, determinism, reuse, invalidation, bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.common.errors import UserInputError
from core.engine.data.layouts import Sample
from core.engine.inputs.cache import ImageCache, StreamedImages, decode_image, decode_workers, load_image_cache, open_split_images
from core.engine.inputs.pipeline import InputPipeline, compute_mean_std, resolve_device

SIZE = 32
MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.1)


def write_samples(folder: Path, arrays: list[np.ndarray], labels: list[int | None] | None = None) -> list[Sample]:
    """BMP files from HxWx3 uint8 arrays, as Samples with a row-naming source."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for row, array in enumerate(arrays):
        path = folder / f"cell_{row:03d}.bmp"
        Image.fromarray(array).save(path)
        label = labels[row] if labels is not None else row % 2
        samples.append(Sample(path=path, id=path.name, label=label, source=f"train.csv row {row + 2}"))
    return samples


def constant(colour: tuple[int, int, int], size: int = SIZE) -> np.ndarray:
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (size, size, 3)).copy()


def random_images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(count)]


def pipeline(samples: list[Sample], cache_dir: Path, **overrides) -> InputPipeline:
    options = dict(
        image_size=SIZE,
        batch_size=4,
        mean=MEAN,
        std=STD,
        device=torch.device("cpu"),
        augment=False,
        shuffle=False,
        seed=0,
        cache_dir=cache_dir,
    )
    return InputPipeline(samples, **(options | overrides))


def test_constant_colour_is_scaled_once_then_normalised(tmp_path: Path) -> None:
    colour = (200, 100, 50)
    samples = write_samples(tmp_path / "data", [constant(colour)] * 3, labels=[1, None, 0])
    batch = next(iter(pipeline(samples, tmp_path / "cache")))
    expected = torch.tensor([(c / 255 - m) / s for c, m, s in zip(colour, MEAN, STD)])
    assert batch.images.dtype == torch.float32 and batch.images.shape == (3, 3, SIZE, SIZE)
    assert torch.allclose(batch.images, expected.view(1, 3, 1, 1).expand_as(batch.images), atol=1e-5)
    assert batch.labels.tolist() == [1, -1, 0] and batch.labels.dtype == torch.int64
    assert batch.indices.tolist() == [0, 1, 2]


def test_augmented_batch_keeps_the_centre_and_fills_black(tmp_path: Path) -> None:
    colour = (200, 100, 50)
    samples = write_samples(tmp_path / "data", [constant(colour)] * 8)
    batches = list(pipeline(samples, tmp_path / "cache", augment=True, shuffle=True, batch_size=8))
    images = batches[0].images
    expected = torch.tensor([(c / 255 - m) / s for c, m, s in zip(colour, MEAN, STD)])
    assert torch.allclose(images[:, :, SIZE // 2, SIZE // 2], expected.expand(8, 3), atol=1e-4)
    black = torch.tensor([(0 - m) / s for m, s in zip(MEAN, STD)])
    corners = images[:, :, 0, 0]
    rotated = (corners - black).abs().max(dim=1).values < 1e-3
    assert rotated.any()  # some draw turned the image far enough to bring black into the corner


def test_same_epoch_replays_exactly_and_epochs_differ(tmp_path: Path) -> None:
    samples = write_samples(tmp_path / "data", random_images(10))
    run = pipeline(samples, tmp_path / "cache", augment=True, shuffle=True, seed=3)

    def epoch(number: int) -> list:
        run.set_epoch(number)
        return list(run)

    first, again, second = epoch(1), epoch(1), epoch(2)
    assert len(first) == len(run) == 3 and [len(b.indices) for b in first] == [4, 4, 2]
    for a, b in zip(first, again):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.images, b.images)
    assert [b.indices.tolist() for b in first] != [b.indices.tolist() for b in second]
    assert sorted(torch.cat([b.indices for b in second]).tolist()) == list(range(10))  # each image once
    other_seed = pipeline(samples, tmp_path / "cache", augment=True, shuffle=True, seed=4)
    other_seed.set_epoch(1)
    assert [b.indices.tolist() for b in other_seed] != [b.indices.tolist() for b in first]


def test_batch_rows_match_their_indices_and_labels(tmp_path: Path) -> None:
    arrays = random_images(9, seed=1)
    samples = write_samples(tmp_path / "data", arrays)
    run = pipeline(samples, tmp_path / "cache", shuffle=True, drop_last=True, channels_last=True)
    batches = list(run)
    assert len(run) == len(batches) == 2  # the last, partial batch is dropped
    for batch in batches:
        assert batch.images.is_contiguous(memory_format=torch.channels_last)
        for row, index in enumerate(batch.indices.tolist()):
            expected = (torch.from_numpy(arrays[index]).permute(2, 0, 1) / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(
                STD
            ).view(3, 1, 1)
            assert torch.allclose(batch.images[row], expected, atol=1e-5)
            assert batch.labels[row] == index % 2


def test_stopping_mid_epoch_is_clean(tmp_path: Path) -> None:
    samples = write_samples(tmp_path / "data", random_images(12))
    run = pipeline(samples, tmp_path / "cache", batch_size=2)
    for number, _ in enumerate(run):
        if number == 1:
            break  # the prefetch thread must finish and release without hanging
    assert len(list(run)) == 6


def test_cache_is_reused_then_rebuilt_when_a_file_changes(tmp_path: Path) -> None:
    samples = write_samples(tmp_path / "data", random_images(4))
    cache_dir = tmp_path / "cache"
    first = load_image_cache(samples, SIZE, cache_dir=cache_dir)
    second = load_image_cache(samples, SIZE, cache_dir=cache_dir)
    assert not first.reused and second.reused and second.path == first.path
    assert first.build_seconds > 0 and second.build_seconds == 0
    assert not any((tmp_path / "data").glob("*.npy"))  # nothing written into the data folder

    stat = samples[2].path.stat()
    os.utime(samples[2].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = load_image_cache(samples, SIZE, cache_dir=cache_dir)
    assert not touched.reused and touched.path != first.path
    assert not first.path.exists()  # the stale version of this split is removed ...
    other_split = load_image_cache(samples[:2], SIZE, cache_dir=cache_dir)
    assert touched.path.exists() and other_split.path.exists()  # ... but never another split's cache

    Image.fromarray(constant((9, 8, 7))).save(samples[1].path)
    replaced = load_image_cache(samples, SIZE, cache_dir=cache_dir)
    assert not replaced.reused
    assert (replaced.images[1] == np.array([9, 8, 7], dtype=np.uint8)).all()
    assert load_image_cache(samples, SIZE, cache_dir=cache_dir, num_workers=0).reused


def test_parallel_build_equals_sequential_build(tmp_path: Path) -> None:
    samples = write_samples(tmp_path / "data", random_images(70, seed=2))
    sequential = load_image_cache(samples, SIZE, cache_dir=tmp_path / "one")
    parallel = load_image_cache(samples, SIZE, cache_dir=tmp_path / "two", num_workers=2)
    assert not parallel.reused
    assert np.array_equal(np.asarray(sequential.images), np.asarray(parallel.images))


@pytest.mark.parametrize("num_workers", [1, 2])
def test_corrupt_image_is_one_line_naming_file_and_row(tmp_path: Path, num_workers: int) -> None:
    samples = write_samples(tmp_path / "data", random_images(3))
    samples[1].path.write_bytes(b"BM this is not a bitmap")
    cache_dir = tmp_path / "cache"
    with pytest.raises(UserInputError) as caught:
        load_image_cache(samples, SIZE, cache_dir=cache_dir, num_workers=num_workers)
    message = str(caught.value)
    assert "\n" not in message and "cell_001.bmp" in message and "row 3" in message
    assert not list(cache_dir.iterdir())  # no half-built cache left behind


def test_decoding_uses_the_cores_unless_a_setting_or_the_job_caps_it(settings_override) -> None:
    cores = len(os.sched_getaffinity(0))
    settings_override(DECODE_WORKERS=None)
    assert decode_workers() == cores and decode_workers(3) == 3
    settings_override(DECODE_WORKERS="1")
    assert decode_workers() == 1 and decode_workers(3) == 3  # a job's own num_workers wins


def test_single_pass_decodes_batches_without_writing_a_cache(tmp_path: Path) -> None:
    samples = write_samples(tmp_path / "data", random_images(10, seed=3))
    cache_dir = tmp_path / "cache"
    streamed = pipeline(samples, cache_dir, single_pass=True, batch_size=4)
    assert isinstance(streamed.images, StreamedImages)
    assert not cache_dir.exists()  # nothing written for one read
    cached = pipeline(samples, cache_dir)  # a multi-pass reader builds the cache
    assert isinstance(cached.images, ImageCache) and not cached.images.reused
    reused = pipeline(samples, cache_dir, single_pass=True)
    assert isinstance(reused.images, ImageCache) and reused.images.reused  # a cache there is used
    for one, other in zip(streamed, cached):
        assert torch.equal(one.images, other.images) and torch.equal(one.indices, other.indices)


def test_padded_last_batch_keeps_one_shape_and_the_same_real_rows(tmp_path: Path) -> None:
    samples = write_samples(tmp_path / "data", random_images(10, seed=4))
    plain = list(pipeline(samples, tmp_path / "cache", batch_size=4))
    padded = list(pipeline(samples, tmp_path / "cache", batch_size=4, pad_last_batch=True))
    assert [len(b.images) for b in plain] == [4, 4, 2] and [len(b.images) for b in padded] == [4, 4, 4]
    for one, other in zip(plain, padded):
        assert torch.equal(one.images, other.real(other.images)) and torch.equal(one.labels, other.labels)
        assert torch.equal(one.indices, other.indices)
    black = (torch.zeros(3) - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(padded[-1].images[2:], black.view(1, 3, 1, 1).expand(2, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="inference"):
        pipeline(samples, tmp_path / "cache", augment=True, pad_last_batch=True)


def test_single_pass_never_reads_a_stale_cache(tmp_path: Path) -> None:
    samples = write_samples(tmp_path / "data", random_images(3))
    load_image_cache(samples, SIZE, cache_dir=tmp_path / "cache")
    Image.fromarray(constant((9, 8, 7))).save(samples[1].path)
    images = open_split_images(samples, SIZE, cache_dir=tmp_path / "cache", single_pass=True)
    assert isinstance(images, StreamedImages)
    rows = np.zeros((1, SIZE, SIZE, 3), dtype=np.uint8)
    images.take(np.array([1]), rows)
    assert (rows[0] == np.array([9, 8, 7], dtype=np.uint8)).all()


def test_off_size_images_are_resized_antialiased(tmp_path: Path) -> None:
    stripes = np.zeros((96, 64, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: aliasing would keep them, antialiasing greys them
    samples = write_samples(tmp_path / "data", [stripes, constant((10, 20, 30))])
    cache = load_image_cache(samples, SIZE, cache_dir=tmp_path / "cache")
    assert cache.images.shape == (2, SIZE, SIZE, 3)
    assert 100 < cache.images[0].mean() < 155 and cache.images[0].std() < 30
    expected = np.asarray(Image.fromarray(stripes).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    assert np.array_equal(cache.images[0], expected)
    assert np.array_equal(decode_image(samples[1], SIZE), constant((10, 20, 30)))


def test_mean_std_are_per_channel_over_pixels_in_unit_range(tmp_path: Path) -> None:
    samples = write_samples(tmp_path / "data", [constant((0, 51, 255)), constant((255, 51, 255))])
    mean, std = compute_mean_std(samples, SIZE, cache_dir=tmp_path / "cache")
    assert mean == pytest.approx((0.5, 0.2, 1.0))
    assert std == pytest.approx((0.5, 1 / 255, 1 / 255))  # a constant channel is floored, not zero


def test_device_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserInputError, match="device: unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserInputError, match="^device: cuda requested but no GPU is available$"):
            resolve_device("cuda")


def test_synthetic_split_epoch_covers_every_row_with_its_label(synth_dir: Path, tmp_path: Path) -> None:
    from core.engine.data.layouts import read_split

    samples = read_split(synth_dir, "train")
    mean, std = compute_mean_std(samples, 48, cache_dir=tmp_path)
    assert all(0 < m < 0.5 for m in mean) and all(0 < s < 0.5 for s in std)  # purple cells on black
    run = InputPipeline(
        samples,
        image_size=48,
        batch_size=32,
        mean=mean,
        std=std,
        device=torch.device("cpu"),
        augment=True,
        shuffle=True,
        seed=0,
        cache_dir=tmp_path,
    )
    seen, labels = [], []
    for batch in run:
        seen += batch.indices.tolist()
        labels += batch.labels.tolist()
    assert sorted(seen) == list(range(len(samples)))
    assert labels == [samples[i].label for i in seen]
    assert not any(synth_dir.rglob("*.npy"))


def test_real_cnmc_images_decode_and_resize(realdata_dir: Path, tmp_path: Path) -> None:
    from core.engine.data.layouts import read_csv_samples

    samples = read_csv_samples(realdata_dir, "labels.csv", labelled=True)[:8]
    cache = load_image_cache(samples, 64, cache_dir=tmp_path)
    for sample, row in zip(samples, cache.images):
        with Image.open(sample.path) as image:
            expected = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR))
        assert np.array_equal(row, expected)
    assert cache.images.max() > 100  # real stained cells, not an empty array


def test_a_padded_batch_gives_the_same_eval_outputs_for_its_real_rows(tmp_path: Path) -> None:
    """What predict and validation do on a GPU (pad the last batch), proved on the CPU: in eval mode
    each row's output depends on that row alone, so the padding changes nothing."""
    from core.engine.model.resnet import build_model

    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    samples = write_samples(tmp_path / "data", random_images(6, seed=5))
    plain = list(pipeline(samples, tmp_path / "cache", batch_size=4))[-1]
    padded = list(pipeline(samples, tmp_path / "cache", batch_size=4, pad_last_batch=True))[-1]
    with torch.inference_mode():
        assert torch.allclose(model(plain.images), padded.real(model(padded.images)), atol=1e-5)
