"""Grad-CAM lesion maps with the grad-cam package: the map, an overlay on the scan, and a lesion box."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from PIL import Image, ImageDraw
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from core.errors import StudioError
from core.model import Classifier, cam_layer

CAM_METHODS = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "eigencam": EigenCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
}
MAX_OVERLAY_SIDE = 1024  # overlays of larger scans are drawn at this size


def compute_cam(model: Classifier, x: torch.Tensor, *, target: int, method: str = "gradcam") -> np.ndarray:
    """The class-activation map of `target` for one normalised input (1, 3, S, S): float (S, S) in [0, 1]."""
    if method not in CAM_METHODS:
        raise StudioError(f"unknown lesion-map method '{method}'; choose one of {', '.join(CAM_METHODS)}.")
    model.eval()
    # The context manager removes the hooks, so repeated calls leak nothing.
    # ScoreCAM draws a tqdm bar on stderr for every map; that is noise in a server log or a benchmark.
    quiet = contextlib.redirect_stderr(io.StringIO()) if method == "scorecam" else contextlib.nullcontext()
    with CAM_METHODS[method](model=model, target_layers=[cam_layer(model)]) as cam, quiet:
        cam.batch_size = 32  # ScoreCAM's masked forward passes per batch (read only by ScoreCAM)
        grayscale = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(target))])
    out = np.nan_to_num(grayscale[0].astype(np.float32))
    return np.clip(out, 0, 1)


def lesion_box(cam: np.ndarray, *, threshold: float = 0.5) -> tuple[int, int, int, int] | None:
    """(y0, x0, y1, x1), end-exclusive: the bounding box of the map's connected region around its peak
    where it is at least `threshold` times its maximum. None for an empty map."""
    peak = float(cam.max())
    if peak <= 0:
        return None
    hot = cam >= threshold * peak
    seed = np.unravel_index(int(np.argmax(cam)), cam.shape)
    region = np.zeros_like(hot)
    region[seed] = True
    while True:  # grow the peak's region through 4-neighbours that are hot
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= hot
        if (grown == region).all():
            break
        region = grown
    ys, xs = np.nonzero(region)
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def overlay(pixels: np.ndarray, cam: np.ndarray, *, opacity: float = 0.5) -> np.ndarray:
    """The map in a heat colour over the scan (uint8 (H, W) or (H, W, 3)): uint8 (h, w, 3), at most 1024 px."""
    im = Image.fromarray(pixels).convert("RGB")
    scale = min(1.0, MAX_OVERLAY_SIDE / max(im.size))
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR)
    heat = Image.fromarray((cam * 255).astype(np.uint8)).resize(im.size, Image.Resampling.BILINEAR)
    rgb = np.asarray(im, dtype=np.float32) / 255
    return show_cam_on_image(rgb, np.asarray(heat, dtype=np.float32) / 255, use_rgb=True, image_weight=1 - opacity)


def draw_box(image: np.ndarray, box: tuple[int, int, int, int] | None, scan_hw: tuple[int, int]) -> np.ndarray:
    """Draw a lesion box given in scan pixels onto `image` (uint8 (h, w, 3), possibly resized from the scan)."""
    if box is None:
        return image
    im = Image.fromarray(image)
    sy, sx = im.height / scan_hw[0], im.width / scan_hw[1]
    y0, x0, y1, x1 = box
    width = max(1, round(min(im.size) / 128))
    ImageDraw.Draw(im).rectangle([x0 * sx, y0 * sy, x1 * sx - 1, y1 * sy - 1], outline=(0, 255, 255), width=width)
    return np.asarray(im)
