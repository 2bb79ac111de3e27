"""Grad-CAM heat maps (Selvaraju et al. 2017) of the last ResNet stage, batched.

One convention, written on every page that shows a map: the map explains the ALL logit
(class 1) at `layer4`, whatever the image was predicted as; it is ReLU(sum_k w_k A_k) with
w_k the spatial mean of d(ALL logit)/dA_k, upsampled bilinearly to the input and scaled to
[0, 1] per image. The overlay is matplotlib's `jet` colormap at alpha 0.45 over the cell as
the model saw it (resized to the checkpoint's image size).

Own implementation (a forward hook and one torch.autograd.grad call) rather than
pytorch-grad-cam or captum: it is twenty lines and needs no new dependency, and it detaches
the layer's output into a fresh leaf, so no graph is built below it and the backward pass runs
through the pooling and fc head only: a batch costs about one inference forward pass.

Which images an evaluate or predict run explains (`select_for_explanation`: every image, or the most
confident mistakes and the least confident images) and where the overlays go (`write_explanations`:
explanations/ with one PNG per image, explanations.csv saying why each was chosen, explanations.zip
holding both) are here too. evaluate and predict import this module only when asked for heat maps."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from core.common.atomic import open_atomic
from core.engine.data.layouts import Sample
from core.engine.inputs.pipeline import InputPipeline
from core.engine.model.checkpoint import load_checkpoint, model_from_checkpoint
from core.engine.run_folder.layout import EXPLANATIONS_CSV, EXPLANATIONS_ZIP
from core.engine.run_folder.spreadsheet_csv import write_csv
from core.engine.settings import engine_settings

EXPLAINED_LAYER = "layer4"
EXPLAINED_CLASS = 1  # the ALL logit
COLORMAP = "jet"
OVERLAY_ALPHA = 0.45
CONVENTION = (
    f"Grad-CAM of the ALL logit (class {EXPLAINED_CLASS}) at {EXPLAINED_LAYER}, whatever the prediction; "
    f"red = pushes towards ALL. Overlay: {COLORMAP} colormap, alpha {OVERLAY_ALPHA}, over the cell as the "
    "model saw it (left: the cell alone)."
)
EXPLANATIONS_DIR = "explanations"  # the overlay PNGs, in the output folder beside explanations.csv and .zip


def grad_cam(model: nn.Module, images: Tensor, layer: str = EXPLAINED_LAYER, target_class: int = EXPLAINED_CLASS) -> Tensor:
    """(N, H, W) maps in [0, 1] for a batch (N, 3, H, W): one forward pass and a backward pass through the head.

    The model must be in eval mode: BatchNorm then uses its running statistics, so each
    image's map depends on that image alone although the batch is explained at once."""
    if model.training:
        raise ValueError("grad_cam needs model.eval(): in train mode BatchNorm mixes the images of a batch")
    captured: list[Tensor] = []

    def capture(_module: nn.Module, _inputs: tuple, output: Tensor) -> Tensor:
        # A fresh leaf: the backward pass stops here, so it costs only the head (pool and fc).
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    handle = model.get_submodule(layer).register_forward_hook(capture)
    try:
        with torch.enable_grad():
            logits = model(images)
            activations = captured[0]
            # Summing over the batch is exact: each image's logit depends on its own activations only.
            (gradients,) = torch.autograd.grad(logits[:, target_class].float().sum(), activations)
    finally:
        handle.remove()
    weights = gradients.float().mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activations.detach().float()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return cam / peak


def explain_samples(checkpoint_path: Path, samples: list[Sample], *, batch_size: int, device: torch.device) -> list[bytes]:
    """One overlay PNG per sample, in their order: a batch at a time, one forward and backward pass each."""
    checkpoint = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(checkpoint, checkpoint_path).to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # no graph below layer4: the forward pass costs what inference does
    batches = InputPipeline(
        samples,
        image_size=int(checkpoint["image_size"]),
        batch_size=batch_size,
        mean=checkpoint["mean"],
        std=checkpoint["std"],
        device=device,
        augment=False,
        shuffle=False,
        seed=0,
        cache_dir=engine_settings().resolved_cache_dir,
    )
    pictures: list[bytes] = [b""] * len(samples)
    for batch in batches:
        maps = grad_cam(model, batch.images).cpu().numpy()
        pixels = unnormalise(batch.images, checkpoint["mean"], checkpoint["std"])
        for row, position in enumerate(batch.indices.tolist()):
            pictures[position] = overlay_png(pixels[row], maps[row])
    return pictures


def overlay_png(image: np.ndarray, cam: np.ndarray) -> bytes:
    """A PNG of the cell (uint8 HxWx3) and, beside it, the cell under the heat map (HxW in [0, 1])."""
    colours = matplotlib.colormaps[COLORMAP](cam)[..., :3]
    blended = (1 - OVERLAY_ALPHA) * (image / 255.0) + OVERLAY_ALPHA * colours
    pair = np.concatenate([image, np.clip(blended * 255, 0, 255).astype(np.uint8)], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(pair).save(buffer, format="PNG")
    return buffer.getvalue()


def unnormalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The batch as uint8 NHWC, as the model saw it before normalisation."""
    mean_t = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    pixels = (images.float() * std_t + mean_t).clamp(0, 1) * 255
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def write_zip(files: dict[str, bytes], path: Path) -> Path:
    """A zip of the PNGs (stored, not deflated: PNG is compressed already), written atomically (core.common.atomic)."""
    with open_atomic(path, "wb") as file, zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


# ---------------------------------------------------------------- which images, written where


def select_for_explanation(
    probabilities: np.ndarray, threshold: float, truth: np.ndarray | None, count: int | None
) -> list[tuple[int, str]]:
    """(index, why) of the images to explain: all of them (count None), or the `count` most confident
    mistakes (labelled sets) and the `count` least confident images; confidence = |P(ALL) - threshold|."""
    if count is None:
        return [(i, "all") for i in range(len(probabilities))]
    if count == 0:
        return []
    margin = np.abs(probabilities - threshold)
    chosen: list[tuple[int, str]] = []
    if truth is not None:
        wrong = np.flatnonzero((probabilities >= threshold).astype(int) != truth)
        chosen += [(int(i), "confident mistake") for i in wrong[np.argsort(-margin[wrong], kind="stable")][:count]]
    taken = {i for i, _ in chosen}
    uncertain = [int(i) for i in np.argsort(margin, kind="stable") if int(i) not in taken][:count]
    return chosen + [(i, "least confident") for i in uncertain]


def write_explanations(
    out_dir: Path,
    checkpoint: Path,
    samples: list[Sample],
    probabilities: np.ndarray,
    threshold: float,
    selection: list[tuple[int, str]],
    *,
    batch_size: int,
    device: torch.device,
) -> dict[int, str]:
    """Overlay PNGs of the selected images into out_dir/explanations and explanations.zip; returns index → file name."""
    if not selection:
        return {}
    chosen = [samples[i] for i, _ in selection]
    pictures = explain_samples(checkpoint, chosen, batch_size=batch_size, device=device)
    folder = out_dir / EXPLANATIONS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    names, files, rows = {}, {}, []
    for (index, why), picture in zip(selection, pictures):
        name = f"{index:05d}_{_safe_name(samples[index].id)}.png"
        (folder / name).write_bytes(picture)
        names[index], files[name] = name, picture
        true_label = "" if samples[index].label is None else samples[index].label
        rows.append(
            [name, samples[index].id, why, f"{probabilities[index]:.6f}", int(probabilities[index] >= threshold), true_label]
        )
    listing = write_csv(out_dir / EXPLANATIONS_CSV, ["file", "ID", "why", "prob_all", "predicted", "true_label"], rows)
    files[EXPLANATIONS_CSV] = listing.encode()
    files["README.txt"] = (CONVENTION + f"\nExplained with {checkpoint.name}.\n").encode()
    write_zip(files, out_dir / EXPLANATIONS_ZIP)
    return names


def _safe_name(sample_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(sample_id).stem)[:80]
