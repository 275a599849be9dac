"""The built-in demo data: synthetic grayscale scans whose class is set by one small local lesion.

Each scan has tissue-like texture (noise at three scales), vessel-like curves, a few benign bright
spots in every class, sensor noise, and acquisition variation (global gamma, contrast, brightness).
The class is decided by a small lesion at a random place:

- ``normal``: no lesion;
- ``nodule``: a round, bright, soft-edged spot;
- ``mass``: an irregular dark region;
- ``ring``: a bright annulus with a darker centre.

A per-image lesion mask is kept so lesion maps can be scored. Everything is drawn from one seeded
generator, so the same seed gives the same images on any machine; 10,000 images at 32 px render in
about a second on a laptop CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CLASSES = ("normal", "nodule", "mass", "ring")
_CHUNK = 512  # images rendered at once: bounds memory at large sizes


@dataclass(frozen=True)
class SyntheticSpec:
    """How hard the demo task is. `lesion_contrast` scales the lesion's amplitude against the tissue."""

    lesion_contrast: float = 1.0
    noise: float = 0.05
    distractors: int = 2


def _uniform(g: torch.Generator, n: int, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand((n, *shape), generator=g)


def _texture(g: torch.Generator, n: int, size: int) -> torch.Tensor:
    """Tissue-like background: smooth noise at three scales. (N, S, S) around 0.5."""
    out = torch.zeros(n, 1, size, size)
    for cells, amp in ((4, 0.16), (8, 0.08), (16, 0.04)):
        grid = torch.randn((n, 1, cells, cells), generator=g)
        out += amp * torch.nn.functional.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)
    return 0.5 + out[:, 0]


def _vessels(g: torch.Generator, n: int, yy: torch.Tensor, xx: torch.Tensor, count: int = 3) -> torch.Tensor:
    """Thin meandering bright curves. (N, S, S) >= 0."""
    out = torch.zeros(n, *yy.shape)
    for _ in range(count):
        theta = _uniform(g, n, 0, math.pi, 1, 1)
        offset = _uniform(g, n, 0.1, 0.9, 1, 1)
        amp = _uniform(g, n, 0.03, 0.12, 1, 1)
        freq = _uniform(g, n, 0.5, 2.0, 1, 1)
        phase = _uniform(g, n, 0, 2 * math.pi, 1, 1)
        width = _uniform(g, n, 0.012, 0.025, 1, 1)
        strength = _uniform(g, n, 0.05, 0.15, 1, 1)
        u = xx * torch.cos(theta) + yy * torch.sin(theta)
        v = -xx * torch.sin(theta) + yy * torch.cos(theta)
        d = v - (offset - 0.5 + amp * torch.sin(2 * math.pi * freq * u + phase))
        out += strength * torch.exp(-((d / width) ** 2))
    return out


def _spot(yy, xx, cy, cx, radius) -> torch.Tensor:
    """Distance from a centre, in units of radius. (N, S, S)."""
    return torch.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / radius


def _render_chunk(g: torch.Generator, labels: torch.Tensor, size: int, spec: SyntheticSpec):
    n = labels.numel()
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # (S, S) in (0, 1)
    img = _texture(g, n, size) + _vessels(g, n, yy - 0.5, xx - 0.5)

    # Benign bright spots in every class: smaller than a nodule, so size and shape matter.
    for _ in range(spec.distractors):
        cy, cx = _uniform(g, n, 0.1, 0.9, 1, 1), _uniform(g, n, 0.1, 0.9, 1, 1)
        r = _uniform(g, n, 0.02, 0.035, 1, 1)
        img += _uniform(g, n, 0.08, 0.25, 1, 1) * torch.exp(-(_spot(yy, xx, cy, cx, r) ** 2))

    cy, cx = _uniform(g, n, 0.2, 0.8, 1, 1), _uniform(g, n, 0.2, 0.8, 1, 1)
    r = _uniform(g, n, 0.07, 0.12, 1, 1)
    amp = spec.lesion_contrast * _uniform(g, n, 0.26, 0.66, 1, 1)
    d = _spot(yy, xx, cy, cx, r)  # (N, S, S)
    angle = torch.atan2(yy - cy, xx - cx)
    wobble = (
        1
        + 0.3 * torch.sin(3 * angle + _uniform(g, n, 0, 6.3, 1, 1))
        + 0.2 * torch.sin(5 * angle + _uniform(g, n, 0, 6.3, 1, 1))
    )
    nodule = amp * torch.exp(-2 * d**2)
    mass = -amp * torch.sigmoid((wobble - d) * 6)
    ring = amp * (torch.exp(-(((d - 1.0) / 0.35) ** 2)) - 0.4 * torch.exp(-2 * d**2))
    lab = labels.view(n, 1, 1)
    img += torch.where(lab == 1, nodule, 0) + torch.where(lab == 2, mass, 0) + torch.where(lab == 3, ring, 0)
    masks = torch.where(lab == 2, d < wobble, torch.where(lab == 3, d < 1.35, d < 1.0)) & (lab != 0)

    img += spec.noise * torch.randn(img.shape, generator=g)
    # Acquisition: brightness, contrast around mid-grey, then a global gamma.
    img = (img - 0.5) * _uniform(g, n, 0.7, 1.3, 1, 1) + 0.5 + _uniform(g, n, -0.1, 0.1, 1, 1)
    img = img.clamp(0, 1) ** _uniform(g, n, 0.7, 1.5, 1, 1)
    images = (img * 255).round().to(torch.uint8)
    return images.unsqueeze(1), masks


def render(
    n: int, *, size: int = 32, seed: int = 0, spec: SyntheticSpec | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render `n` demo scans with balanced classes in shuffled order.

    Returns:
        images uint8 (N, 1, S, S), labels int64 (N,), lesion masks bool (N, S, S) (empty for normal).
    """
    spec = spec or SyntheticSpec()
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(CLASSES)
    labels = labels[torch.randperm(n, generator=g)]
    images = torch.empty(n, 1, size, size, dtype=torch.uint8)
    masks = torch.empty(n, size, size, dtype=torch.bool)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        images[start:stop], masks[start:stop] = _render_chunk(g, labels[start:stop], size, spec)
    return images, labels, masks
