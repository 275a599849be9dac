"""Augmentation previews for one image: RGA samples with their exact parameters, and the training views.

Everything runs through the same functions training uses (`core.augment`), with a seeded generator, so
the same seed gives the same pictures and every caption states the parameters that made its picture.
"""

from __future__ import annotations

import numpy as np
import torch

from core.augment import RegionalGamma, TrainAugment, regional_gamma, to_float
from core.config import whole_number
from core.errors import StudioError
from core.imageio import Scan

MAX_SIDE = 512  # previews of larger scans are computed at this size


def _tensor(scan: Scan) -> torch.Tensor:
    """uint8 (1, C, H, W), shrunk so the longer side is at most MAX_SIDE."""
    from PIL import Image

    im = Image.fromarray(scan.pixels)
    scale = min(1.0, MAX_SIDE / max(im.size))
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR)
    a = np.array(im, dtype=np.uint8)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a)).unsqueeze(0)


def _image(x: torch.Tensor) -> np.ndarray:
    """float [0, 1] (C, H, W) -> uint8 (H, W) or (H, W, 3)."""
    a = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def rga_samples(scan: Scan, *, count: int = 8, seed: int = 0, gamma_range=(0.5, 2.0), max_side: float = 0.5**0.5):
    """`count` random RGA draws of one scan: [(image, caption)], captions giving gamma and box (y0, x0, y1, x1)."""
    if not 1 <= count <= 64:
        raise StudioError("ask for between 1 and 64 samples.")
    if not 0 < gamma_range[0] <= gamma_range[1]:
        raise StudioError("the gamma range must satisfy 0 < lowest <= highest.")
    if not 0 < max_side <= 1:
        raise StudioError("the largest box side must be a fraction between 0 and 1.")
    x = _tensor(scan)
    _, _, h, w = x.shape
    rga = RegionalGamma(gamma_range=tuple(gamma_range), max_side=max_side)
    params = rga.sample(count, h, w, generator=torch.Generator().manual_seed(whole_number(seed, "seed", low=0)))
    out = regional_gamma(to_float(x).expand(count, -1, -1, -1), gamma=params.gamma, boxes=params.boxes)
    return [
        (_image(out[i]), f"gamma {float(params.gamma[i]):.3f}, box {tuple(int(v) for v in params.boxes[i])}")
        for i in range(count)
    ]


def rga_explicit(scan: Scan, *, gamma: float, box: tuple[float, float, float, float]):
    """RGA with chosen parameters; `box` as fractions (y0, x0, y1, x1) of the image. Returns (image, caption)."""
    if gamma <= 0:
        raise StudioError("gamma must be positive.")
    x = _tensor(scan)
    _, _, h, w = x.shape
    y0, x0, y1, x1 = box
    if not (0 <= y0 <= y1 <= 1 and 0 <= x0 <= x1 <= 1):
        raise StudioError("the box must satisfy 0 <= top <= bottom <= 1 and 0 <= left <= right <= 1.")
    pixels = torch.tensor([[round(y0 * h), round(x0 * w), round(y1 * h), round(x1 * w)]])
    out = regional_gamma(to_float(x), gamma=torch.tensor([float(gamma)]), boxes=pixels)
    return _image(out[0]), f"gamma {gamma:.3f}, box {tuple(int(v) for v in pixels[0])}"


def training_views(scan: Scan, *, size: int = 64, seed: int = 0, rga: bool = True, gamma_range=(0.5, 2.0)):
    """The two views one training step sees (before normalisation): [(image, caption)] x 2."""
    if not 8 <= size <= 512:
        raise StudioError("the view size must be between 8 and 512 pixels.")
    x = _tensor(scan)
    aug = TrainAugment(size=size, rga=RegionalGamma(gamma_range=tuple(gamma_range)) if rga else None)
    g = torch.Generator().manual_seed(whole_number(seed, "seed", low=0))
    views = []
    for name in ("view 1 (teacher)", "view 2 (student)"):
        p = aug.sample(1, x.shape[-2], x.shape[-1], generator=g)
        img = aug.apply(x, p, normalise=False)[0]
        top, left, ch, cw = (int(v) for v in p.crop[0])
        parts = [
            f"crop ({top}, {left}) {ch}x{cw}",
            f"flip h={bool(p.flip[0, 0])} v={bool(p.flip[0, 1])}",
            f"contrast {float(p.contrast[0]):.2f}",
            f"saturation {float(p.saturation[0]):.2f}",
        ]
        if p.rga is not None:
            parts.append(f"gamma {float(p.rga.gamma[0]):.3f} box {tuple(int(v) for v in p.rga.boxes[0])}")
        views.append((_image(img), f"{name}: " + ", ".join(parts)))
    return views
