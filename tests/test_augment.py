"""The device batch augmentation has the CPU reference's geometry, and its randomness is seeded."""

from __future__ import annotations

import pytest
import torch

from core.engine.inputs.augment import AugmentParams, augment_batch, augment_image, sample_augment_params


def structured_image(height: int, width: int) -> torch.Tensor:
    """A uint8 CHW image with an off-centre disc and an asymmetric bar, so any wrong turn or flip shows."""
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    disc = (xx - width * 0.65) ** 2 + (yy - height * 0.3) ** 2 < (min(height, width) * 0.15) ** 2
    bar = (xx > width * 0.15) & (xx < width * 0.3) & (yy > height * 0.45) & (yy < height * 0.9)
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    image[0][disc] = 255
    image[1][bar] = 200
    image[2][disc | bar] = 120
    return image


def one(angle: float, hflip: bool, vflip: bool) -> AugmentParams:
    return AugmentParams(torch.tensor([angle]), torch.tensor([hflip]), torch.tensor([vflip]))


@pytest.mark.parametrize("height,width", [(64, 64), (48, 64)])
@pytest.mark.parametrize(
    "angle,hflip,vflip",
    [
        (0.0, False, False),
        (0.0, True, False),
        (0.0, False, True),
        (17.0, False, False),
        (33.5, True, False),
        (60.0, False, True),
        (81.0, True, True),
        (90.0, False, False),
    ],
)
def test_device_batch_matches_cpu_reference(height: int, width: int, angle: float, hflip: bool, vflip: bool) -> None:
    image = structured_image(height, width)
    reference = augment_image(image, angle, hflip, vflip).float()
    batched = augment_batch(image[None].float(), one(angle, hflip, vflip))[0]
    assert (reference - batched).abs().mean() < 1.0  # on the 0..255 scale; the reference rounds to uint8
    shape_ref, shape_batch = reference.sum(0) > 60, batched.sum(0) > 60
    iou = (shape_ref & shape_batch).sum() / (shape_ref | shape_batch).sum()
    assert iou >= 0.95


def test_batch_applies_each_images_own_parameters() -> None:
    image = structured_image(64, 64)
    params = AugmentParams(torch.tensor([0.0, 45.0, 0.0]), torch.tensor([False, False, True]), torch.tensor([False, True, False]))
    batched = augment_batch(image[None].float().repeat(3, 1, 1, 1), params)
    assert torch.allclose(batched[0], image.float(), atol=1e-3)  # identity stays exact
    assert torch.allclose(batched[2], image.flip(-1).float(), atol=1e-3)  # a pure flip stays exact
    reference = augment_image(image, 45.0, False, True).float()
    assert (reference - batched[1]).abs().mean() < 1.0


def test_rotation_is_counter_clockwise_with_black_corners() -> None:
    image = torch.full((3, 32, 32), 255, dtype=torch.uint8)
    image[:, :4, 24:] = 0  # a black notch in the top-right corner ...
    rotated = augment_batch(image[None].float(), one(90.0, False, False))[0]
    assert rotated[:, :4, :4].max() < 1.0  # ... is top-left after a quarter turn counter-clockwise
    tilted = augment_batch(torch.full((1, 3, 32, 32), 255.0), one(45.0, False, False))[0]
    assert tilted[:, 0, 0].max() == 0.0 and tilted[:, 16, 16].min() > 254.0  # fill 0 outside, centre kept


def test_parameters_depend_only_on_the_generator_seed() -> None:
    first = sample_augment_params(1000, torch.Generator().manual_seed(7))
    again = sample_augment_params(1000, torch.Generator().manual_seed(7))
    other = sample_augment_params(1000, torch.Generator().manual_seed(8))
    assert torch.equal(first.angles, again.angles) and torch.equal(first.hflip, again.hflip)
    assert torch.equal(first.vflip, again.vflip)
    assert not torch.equal(first.angles, other.angles)
    assert first.angles.min() >= 0.0 and first.angles.max() <= 90.0
    assert 0.4 < first.hflip.float().mean() < 0.6 and 0.4 < first.vflip.float().mean() < 0.6
    assert not torch.equal(first.hflip, first.vflip)  # two independent coins


def test_parameter_count_must_match_batch() -> None:
    with pytest.raises(ValueError, match="2 parameter sets for 1 images"):
        augment_batch(
            torch.zeros(1, 3, 8, 8),
            AugmentParams(torch.zeros(2), torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool)),
        )
