"""The lab's augmentation: rotation by an angle in [0°, 90°], then horizontal and vertical
flips (p=0.5 each), black fill. Parameters are drawn once per image from a generator, then
applied either per image on the CPU (`augment_image`, the torchvision reference) or to a
whole batch on the device (`augment_batch`, one affine_grid + grid_sample): the same
geometry either way, so the GPU path is the lab's augmentation, only faster.

Angles are counter-clockwise on screen, as in torchvision; rotation is about the image
centre, pixel centres follow align_corners=False.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_ANGLE_DEGREES = 90.0
FLIP_PROBABILITY = 0.5


@dataclass(frozen=True)
class AugmentParams:
    """Per-image random parameters of one batch (or epoch), all on the CPU."""

    angles: Tensor  # float32 (n,), degrees in [0, 90], counter-clockwise
    hflip: Tensor  # bool (n,), applied after the rotation
    vflip: Tensor  # bool (n,), applied after the horizontal flip

    def __len__(self) -> int:
        return len(self.angles)

    def __getitem__(self, index: slice | Tensor) -> "AugmentParams":
        """The parameters of a subset of images (a batch of an epoch's draw)."""
        return AugmentParams(self.angles[index], self.hflip[index], self.vflip[index])


def sample_augment_params(n: int, generator: torch.Generator) -> AugmentParams:
    """Draw rotation and flips for n images; the same generator state gives the same draw."""
    angles = torch.rand(n, generator=generator) * MAX_ANGLE_DEGREES
    hflip = torch.rand(n, generator=generator) < FLIP_PROBABILITY
    vflip = torch.rand(n, generator=generator) < FLIP_PROBABILITY
    return AugmentParams(angles=angles, hflip=hflip, vflip=vflip)


def augment_image(image: Tensor, angle: float, hflip: bool, vflip: bool) -> Tensor:
    """Reference CPU path for one CHW image (uint8 or float): rotate, then flip, black fill."""
    # Imported here, not at the top: torchvision.transforms costs about as much start-up time as
    # torch itself, and every command and worker imports this module for augment_batch alone.
    import torchvision.transforms.v2.functional as TF
    from torchvision.transforms import InterpolationMode

    out = TF.rotate(image, float(angle), interpolation=InterpolationMode.BILINEAR, fill=0.0)
    if hflip:
        out = TF.horizontal_flip(out)
    if vflip:
        out = TF.vertical_flip(out)
    return out


def augment_batch(images: Tensor, params: AugmentParams) -> Tensor:
    """Rotate and flip a float NCHW batch on its own device in one grid_sample (zeros outside)."""
    n, _, height, width = images.shape
    if len(params) != n:
        raise ValueError(f"augment_batch: {len(params)} parameter sets for {n} images")
    theta = _sampling_matrices(params, height, width)
    if images.is_cuda:
        theta = theta.pin_memory()  # a copy from pageable memory would wait for the GPU to drain
    theta = theta.to(device=images.device, dtype=images.dtype, non_blocking=True)
    grid = F.affine_grid(theta, [n, 3, height, width], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _sampling_matrices(params: AugmentParams, height: int, width: int) -> Tensor:
    """(n, 2, 3) matrices mapping output to input coordinates, in affine_grid's normalised units.

    In pixel units (y down) a counter-clockwise rotation by a reads an output point from
    input R = [[cos a, -sin a], [sin a, cos a]] times it; normalised units scale x by
    2/width and y by 2/height, hence the aspect factors. A flip of the output negates that
    output coordinate before the rotation is undone, i.e. a sign on R's column.
    """
    radians = params.angles.to(torch.float64) * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    x_sign = torch.where(params.hflip, -1.0, 1.0).to(torch.float64)
    y_sign = torch.where(params.vflip, -1.0, 1.0).to(torch.float64)
    theta = torch.zeros(len(params), 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = cos * x_sign
    theta[:, 0, 1] = -sin * (height / width) * y_sign
    theta[:, 1, 0] = sin * (width / height) * x_sign
    theta[:, 1, 1] = cos * y_sign
    return theta.to(torch.float32)
