"""Augmentation as batched tensor ops on the training device: regional gamma (RGA) and the reference pipeline.

Randomness is explicit: `*.sample(...)` draws parameters from a caller's `torch.Generator` and
`*.apply(...)` uses them, so a preview shows exactly what training does and the same seed gives the
same pictures.

RGA (Liu et al., Neurocomputing 2025): per image `l ~ Beta(1, 1)`, `lam = max(l, 1 - l)`, a box of side
ratio `sqrt(1 - lam)` centred uniformly and clipped to the image, `gamma ~ U(0.5, 2)`; inside the box
`x <- x ** gamma` on intensities in [0, 1]. The public reference code raises raw 0..255 values to the
power and casts back to uint8, which overflows; this is the intended, normalised form.

The pipeline around it follows the reference: RandomResizedCrop (scale 0.8..1, ratio 3/4..4/3), RGA,
ColorJitter (contrast 0.5, saturation 0.5, in random order), horizontal and vertical flips, ImageNet
normalisation. The flips are folded into the crop's sampling grid; since RGA's box and the jitter do not
depend on position, the distribution of views is the same as flipping last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


def regional_gamma(images: torch.Tensor, *, gamma: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Raise each image to its own gamma inside its own box; leave the rest unchanged.

    Args:
        images: float (B, C, H, W) in [0, 1].
        gamma: (B,) exponents.
        boxes: (B, 4) integer pixel boxes (y0, x0, y1, x1), end-exclusive.
    Returns:
        float (B, C, H, W), same dtype and device as `images`.
    """
    b, _, h, w = images.shape
    boxes = boxes.to(images.device)
    ys = torch.arange(h, device=images.device).view(1, h, 1)
    xs = torch.arange(w, device=images.device).view(1, 1, w)
    y0, x0, y1, x1 = (boxes[:, i].view(b, 1, 1) for i in range(4))
    inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)  # (B, H, W)
    powered = images.clamp(0, 1) ** gamma.to(images.device, images.dtype).view(b, 1, 1, 1)
    return torch.where(inside.unsqueeze(1), powered, images)


@dataclass
class RGAParams:
    """Parameters of one RGA draw: gamma (B,) and boxes (B, 4) as (y0, x0, y1, x1)."""

    gamma: torch.Tensor
    boxes: torch.Tensor


@dataclass(frozen=True)
class RegionalGamma:
    """The random RGA of the paper; `gamma_range` and the largest box side ratio can be changed for previews."""

    gamma_range: tuple[float, float] = (0.5, 2.0)
    max_side: float = 0.5**0.5  # sqrt(1 - lam) with lam >= 0.5

    def sample(self, batch: int, height: int, width: int, *, generator: torch.Generator) -> RGAParams:
        device = generator.device
        u = torch.rand(batch, 4, generator=generator, device=device)
        lam = torch.maximum(u[:, 0], 1 - u[:, 0])  # l ~ Beta(1, 1) is uniform
        side = torch.sqrt(1 - lam) * (self.max_side / 0.5**0.5)
        lo, hi = self.gamma_range
        gamma = lo + (hi - lo) * u[:, 1]
        cut_h, cut_w = (height * side).floor().long(), (width * side).floor().long()
        cy, cx = (u[:, 2] * height).floor().long(), (u[:, 3] * width).floor().long()
        y0, y1 = (cy - cut_h // 2).clamp(0, height), (cy + cut_h // 2).clamp(0, height)
        x0, x1 = (cx - cut_w // 2).clamp(0, width), (cx + cut_w // 2).clamp(0, width)
        return RGAParams(gamma, torch.stack([y0, x0, y1, x1], dim=1))

    def __call__(self, images: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        p = self.sample(images.shape[0], images.shape[-2], images.shape[-1], generator=generator)
        return regional_gamma(images, gamma=p.gamma, boxes=p.boxes)


@dataclass
class ViewParams:
    """Everything one augmented view depends on, per image (B rows each)."""

    crop: torch.Tensor  # (B, 4) float (top, left, height, width) in pixels of the source
    flip: torch.Tensor  # (B, 2) bool (horizontal, vertical)
    rga: RGAParams | None
    contrast: torch.Tensor  # (B,) factor
    saturation: torch.Tensor  # (B,) factor
    saturation_first: torch.Tensor  # (B,) bool: jitter order


def _sample_crop(batch, h, w, scale, ratio, generator, tries: int = 10) -> torch.Tensor:
    """RandomResizedCrop's parameter draw, batched: the first of `tries` candidates that fits, else the whole image."""
    device = generator.device
    area = h * w * (scale[0] + (scale[1] - scale[0]) * torch.rand(batch, tries, generator=generator, device=device))
    lo, hi = math.log(ratio[0]), math.log(ratio[1])  # host scalars: no copy to the device inside a CUDA graph
    r = torch.exp(lo + (hi - lo) * torch.rand(batch, tries, generator=generator, device=device))
    cw, ch = torch.sqrt(area * r).round(), torch.sqrt(area / r).round()
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.argmax(ok.int(), dim=1)  # first fitting candidate (0 if none fits)
    any_ok = ok.any(dim=1)
    pick = torch.arange(batch, device=device)
    cw = torch.where(any_ok, cw[pick, first], torch.full_like(cw[:, 0], w))
    ch = torch.where(any_ok, ch[pick, first], torch.full_like(ch[:, 0], h))
    u = torch.rand(batch, 2, generator=generator, device=device)
    top = torch.floor(u[:, 0] * (h - ch + 1))
    left = torch.floor(u[:, 1] * (w - cw + 1))
    return torch.stack([top, left, ch, cw], dim=1)


def _crop_flip(images: torch.Tensor, crop: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resized crop with optional flips, as one grid_sample over the batch."""
    b, _, h, w = images.shape
    top, left, ch, cw = crop.to(images.dtype).unbind(1)
    sx = torch.where(flip[:, 0], -1.0, 1.0).to(images.dtype) * cw / w
    sy = torch.where(flip[:, 1], -1.0, 1.0).to(images.dtype) * ch / h
    tx = (2 * left + cw) / w - 1
    ty = (2 * top + ch) / h - 1
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, [b, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    f = f.view(-1, 1, 1, 1).to(x.dtype)
    return (f * x + (1 - f) * mean).clamp(0, 1)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:  # a grayscale image has no saturation to change
        return x
    f = f.view(-1, 1, 1, 1).to(x.dtype)
    return (f * x + (1 - f) * _gray(x)).clamp(0, 1)


@cache
def _imagenet_stats(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as (1, 3, 1, 1) tensors, made once per device and dtype: a training step captured in a
    CUDA graph may not copy them from the host."""
    mean = torch.tensor(IMAGENET_MEAN, device=device, dtype=dtype).view(1, 3, 1, 1)
    return mean, torch.tensor(IMAGENET_STD, device=device, dtype=dtype).view(1, 3, 1, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """float [0, 1] (B, C, H, W) with C in {1, 3} -> ImageNet-normalised (B, 3, H, W)."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    mean, std = _imagenet_stats(images.device, images.dtype)
    return (images - mean) / std


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1]."""
    return images.float().div_(255)


def eval_transform(images: torch.Tensor) -> torch.Tensor:
    """What evaluation and prediction feed the network: uint8 (B, C, H, W) -> normalised float (B, 3, H, W)."""
    return normalize(to_float(images))


@dataclass(frozen=True)
class TrainAugment:
    """The reference training pipeline with RGA, batched. Options are keyword-only and stored in each run."""

    size: int = 32
    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rga: RegionalGamma | None = RegionalGamma()
    contrast: float = 0.5
    saturation: float = 0.5
    hflip: float = 0.5
    vflip: float = 0.5

    def sample(self, batch: int, height: int, width: int, *, generator: torch.Generator) -> ViewParams:
        device = generator.device
        crop = _sample_crop(batch, height, width, self.crop_scale, self.crop_ratio, generator)
        u = torch.rand(batch, 5, generator=generator, device=device)
        flip = torch.stack([u[:, 0] < self.hflip, u[:, 1] < self.vflip], dim=1)
        contrast = 1 - self.contrast + 2 * self.contrast * u[:, 2]
        saturation = 1 - self.saturation + 2 * self.saturation * u[:, 3]
        rga = self.rga.sample(batch, self.size, self.size, generator=generator) if self.rga else None
        return ViewParams(crop, flip, rga, contrast, saturation, u[:, 4] < 0.5)

    def apply(self, images: torch.Tensor, params: ViewParams, *, normalise: bool = True) -> torch.Tensor:
        """uint8 (B, C, H, W) -> one augmented view, float (B, 3, size, size) (or [0, 1] (B, C, ...) unnormalised)."""
        x = _crop_flip(to_float(images), params.crop, params.flip, self.size)
        if params.rga is not None:
            x = regional_gamma(x, gamma=params.rga.gamma, boxes=params.rga.boxes)
        first = params.saturation_first.view(-1, 1, 1, 1)
        sat_then_con = _contrast(_saturation(x, params.saturation), params.contrast)
        con_then_sat = _saturation(_contrast(x, params.contrast), params.saturation)
        x = torch.where(first, sat_then_con, con_then_sat)
        return normalize(x) if normalise else x

    def __call__(self, images: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        params = self.sample(images.shape[0], images.shape[-2], images.shape[-1], generator=generator)
        return self.apply(images, params)
