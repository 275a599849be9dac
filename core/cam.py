"""Grad-CAM lesion maps with the grad-cam package: the map, an overlay on the scan, and a lesion box."""

from __future__ import annotations

import contextlib
import io
import numbers

import numpy as np
import pytorch_grad_cam
import torch
from PIL import Image, ImageDraw
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM
from pytorch_grad_cam.utils.image import show_cam_on_image

from core.device import amp_dtype
from core.errors import StudioError
from core.model import Classifier, cam_layer


class ScoreCAM(pytorch_grad_cam.ScoreCAM):
    """The grad-cam package's ScoreCAM, whose masked passes (one per channel of the mapped layer: 512 a scan for
    a ResNet-18) run under autocast to `dtype` when it is set: in bf16, where the device runs it natively, 4.1x
    faster on an AMX CPU, the demo model's maps at most 0.004 from float32's and the same lesion box on 19 of
    20 scans (bench/lesion_maps.py). The scan's own pass, whose logits Diagnose reports, stays float32; with
    `dtype` None this is the package's ScoreCAM."""

    dtype: torch.dtype | None = None

    def get_cam_weights(self, input_tensor, *args, **kwargs):
        device, dtype = input_tensor.device.type, self.dtype or torch.bfloat16
        with torch.autocast(device, dtype=dtype, enabled=self.dtype is not None):
            return super().get_cam_weights(input_tensor, *args, **kwargs)


CAM_METHODS = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "eigencam": EigenCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
}


def check_method(method) -> None:
    """Refuse anything but a lesion-map method's name (from JSON: a list or a number too)."""
    if not isinstance(method, str) or method not in CAM_METHODS:
        raise StudioError(f"unknown lesion-map method '{method}'; choose one of {', '.join(CAM_METHODS)}.")


def check_opacity(opacity) -> None:
    """Refuse an opacity that is not a number from 0 to 1 (NaN included)."""
    if not isinstance(opacity, numbers.Real) or isinstance(opacity, bool) or not 0 <= opacity <= 1:
        raise StudioError("opacity must be a number between 0 and 1.")


MAX_OVERLAY_SIDE = 1024  # overlays of larger scans are drawn at this size


class PredictedOr:
    """A CAM target: class `index`, or with None the class the model predicts for the image, read from the
    same forward pass that the map uses (gradient methods call their targets once, on that pass)."""

    def __init__(self, index: int | None):
        self.index = index

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if self.index is None:
            self.index = int(output.argmax())
        return output[..., self.index]


@contextlib.contextmanager
def gradients_from(model: Classifier, layer: torch.nn.Module):
    """Within the block a backward pass of `model` stops at `layer`: no parameter asks for a gradient and the
    layer's input becomes a leaf that does. The gradient a CAM reads at the layer is the same, without
    computing the weight gradients of the whole network below it (most of a Grad-CAM's cost)."""
    wanted = [p for p in model.parameters() if p.requires_grad]
    for p in wanted:
        p.requires_grad_(False)
    hook = layer.register_forward_pre_hook(lambda _m, args: (args[0].detach().requires_grad_(True), *args[1:]))
    try:
        yield
    finally:
        hook.remove()
        for p in wanted:
            p.requires_grad_(True)


def cams_and_logits(
    model: Classifier, x: torch.Tensor, targets: list[int | None], *, method: str = "gradcam", amp: str = "auto"
) -> tuple[np.ndarray, torch.Tensor, list[int]]:
    """The class-activation maps for each normalised input `x[i]` (N, 3, S, S) of class `targets[i]` (None:
    the predicted class), in one batched pass, with the logits of that pass. Returns (maps float (N, S, S) in
    [0, 1], logits (N, C) float32, the class of each map). In eval mode the images do not interact, so each
    map is the one the image would get alone. Gradient methods need one forward and a short backward;
    ScoreCAM and EigenCAM a forward first when a target is the predicted class. `amp` is the precision of
    ScoreCAM's masked passes (`core.device.precision`'s choices; auto: bf16 where the device runs it natively)."""
    check_method(method)
    masked_dtype = amp_dtype(x.device, amp) if method == "scorecam" else None  # no CPU probe on other maps' path
    if len(targets) != len(x):
        raise StudioError(f"{len(x)} images need {len(x)} target classes, not {len(targets)}.")
    model.eval()
    layer = cam_layer(model)
    # The context managers remove their hooks, so repeated calls leak nothing.
    # ScoreCAM draws a tqdm bar on stderr for every map; that is noise in a server log or a benchmark.
    quiet = contextlib.redirect_stderr(io.StringIO()) if method == "scorecam" else contextlib.nullcontext()
    with CAM_METHODS[method](model=model, target_layers=[layer]) as cam, quiet, gradients_from(model, layer):
        if not cam.uses_gradients and None in targets:  # these call their targets on other passes than x's
            with torch.no_grad():
                predicted = model(x).argmax(1).tolist()
            targets = [p if t is None else t for t, p in zip(targets, predicted, strict=True)]
        chosen = [PredictedOr(None if t is None else int(t)) for t in targets]
        cam.batch_size = 32  # ScoreCAM's masked forward passes per batch (read only by ScoreCAM)
        cam.dtype = masked_dtype  # and their precision (likewise)
        grayscale = cam(input_tensor=x, targets=chosen)
        logits = cam.outputs.detach().float()
    maps = np.clip(np.nan_to_num(grayscale.astype(np.float32)), 0, 1)
    return maps, logits, [c.index for c in chosen]


def compute_cams(
    model: Classifier, x: torch.Tensor, targets: list[int], *, method: str = "gradcam", amp: str = "auto"
) -> np.ndarray:
    """The class-activation maps of `targets[i]` for each normalised input `x[i]`: float (N, S, S) in [0, 1]."""
    return cams_and_logits(model, x, targets, method=method, amp=amp)[0]


def compute_cam(
    model: Classifier, x: torch.Tensor, *, target: int, method: str = "gradcam", amp: str = "auto"
) -> np.ndarray:
    """The class-activation map of `target` for one normalised input (1, 3, S, S): float (S, S) in [0, 1]."""
    return compute_cams(model, x, [target], method=method, amp=amp)[0]


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


def shown(pixels: np.ndarray) -> np.ndarray:
    """The scan as Diagnose shows it (uint8 (H, W) or (H, W, 3)), its longer side at most `MAX_OVERLAY_SIDE` px:
    uint8 (h, w) for a greyscale scan, (h, w, 3) for a colour one. A greyscale scan stays one channel (an
    answer keeps it beside its overlay: a third of the memory of three equal channels), and a 3,000 px
    radiograph never exists at full size in colour."""
    im = Image.fromarray(pixels)
    scale = min(1.0, MAX_OVERLAY_SIDE / max(im.size))
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR)
    return np.asarray(im if im.mode in ("L", "RGB") else im.convert("RGB"))


def overlay(pixels: np.ndarray, cam: np.ndarray, *, opacity: float = 0.5) -> np.ndarray:
    """The map in a heat colour over the scan (uint8 (H, W) or (H, W, 3)): uint8 (h, w, 3), at most 1024 px
    (drawn over `shown(pixels)`, which it leaves as it is)."""
    im = Image.fromarray(shown(pixels)).convert("RGB")
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
