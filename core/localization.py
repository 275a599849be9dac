"""How well a lesion map points at the lesion, scored against a known lesion mask.

- Pointing game: is the map's peak inside the lesion? (1 or 0; Zhang et al., ECCV 2016. Tied maxima
  score the share of them inside, the chance of a random tie-break: a flat map scores the lesion's area.)
- Energy share: the fraction of the map's total energy that falls inside the lesion (1 for a map that
  is zero outside it; the lesion's area share for a uniform map).
"""

from __future__ import annotations

import numpy as np

from core.errors import StudioError


def _check(cam: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam, mask = np.asarray(cam, dtype=np.float64), np.asarray(mask, dtype=bool)
    if cam.shape != mask.shape:
        raise StudioError(f"the map {cam.shape} and the mask {mask.shape} must have the same size.")
    if not mask.any():
        raise StudioError("the mask marks no lesion: nothing to point at.")
    return np.clip(cam, 0, None), mask


def pointing_game(cam: np.ndarray, mask: np.ndarray) -> float:
    """1.0 if the map's maximum lies inside the lesion, 0.0 if outside; with tied maxima, the share inside."""
    cam, mask = _check(cam, mask)
    peak = cam.max()
    if peak <= 0:
        return 0.0
    return float(mask[cam == peak].mean())


def energy_share(cam: np.ndarray, mask: np.ndarray) -> float:
    """The share of the map's energy inside the lesion; 0 for an empty map."""
    cam, mask = _check(cam, mask)
    total = cam.sum()
    return float(cam[mask].sum() / total) if total > 0 else 0.0


def resize_map(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A lesion map resized (bilinear) to the mask's size, for scoring."""
    from PIL import Image

    if cam.shape == tuple(shape):
        return cam
    im = Image.fromarray(np.asarray(cam, dtype=np.float32), mode="F")
    return np.asarray(im.resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def score_maps(model, images, labels, masks, *, method: str = "gradcam") -> dict:
    """Score `method`'s map of the true class on each scan against its lesion mask.

    `images` uint8 (N, C, H, W) as the data loaders give them, `labels` (N,), `masks` bool (N, H, W), each
    mask marking a lesion. Returns the mean pointing game, the mean energy share, and seconds per scan."""
    import time

    from core.augment import eval_transform
    from core.cam import compute_cam

    if len(images) == 0:
        raise StudioError("no scans with a lesion mask to score.")
    t0 = time.perf_counter()
    pointing, energy = [], []
    for x, y, m in zip(images, labels, np.asarray(masks, dtype=bool), strict=True):
        cam = resize_map(compute_cam(model, eval_transform(x[None]), target=int(y), method=method), m.shape)
        pointing.append(pointing_game(cam, m))
        energy.append(energy_share(cam, m))
    return {
        "pointing_game": float(np.mean(pointing)),
        "energy_share": float(np.mean(energy)),
        "seconds_per_image": (time.perf_counter() - t0) / len(images),
        "images": len(images),
    }
