"""Run a saved model on scans: class probabilities and lesion maps, with the same preprocessing as evaluation."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core import calibration
from core.augment import eval_transform
from core.cam import compute_cam, draw_box, lesion_box, overlay
from core.errors import StudioError
from core.imageio import Scan, read_scan, to_model_array
from core.model import load_model

LOW_CONFIDENCE = 0.6  # a prediction below this probability is flagged for a second look


@dataclass
class LesionMap:
    """A lesion map for one scan: `cam` float (S, S) in [0, 1], `overlay` uint8 (h, w, 3), `box` in scan pixels."""

    cam: np.ndarray
    overlay: np.ndarray
    box: tuple[int, int, int, int] | None
    target: str
    method: str


class Predictor:
    """A loaded model ready for scans. Reuse one instance: loading is the slow part."""

    def __init__(self, model_path: str | Path, *, device: str | torch.device = "cpu"):
        self.model, self.spec, self.meta = load_model(model_path, device=device)
        self.device = torch.device(device)
        self.lock = threading.Lock()  # lesion maps hook the shared model: one at a time

    @property
    def classes(self) -> list[str]:
        return self.spec.classes

    def prepare(self, scan: Scan) -> torch.Tensor:
        """A scan as the network sees it: (1, 3, S, S) normalised, exactly as evaluation prepares data."""
        arr = to_model_array(scan, size=self.spec.image_size, channels=self.spec.channels)
        return eval_transform(torch.from_numpy(arr).unsqueeze(0).to(self.device))

    @property
    def calibrated(self) -> bool:
        return "calibration" in self.meta

    @torch.no_grad()
    def probabilities(self, scan: Scan) -> dict[str, float]:
        """Class probabilities, temperature-scaled when the model carries a calibration."""
        probs, _ = calibration.apply(self.model(self.prepare(scan))[0], self.meta)
        return dict(zip(self.classes, probs.cpu().tolist(), strict=True))

    def _summary(self, scan: Scan, probs: dict[str, float]) -> dict:
        best = max(probs, key=probs.get)
        return {
            "predicted": best,
            "confidence": probs[best],
            "probabilities": probs,
            "calibrated": self.calibrated,
            "low_confidence": probs[best] < LOW_CONFIDENCE,
            "scan": scan.info,
        }

    def predict(self, path: str | Path) -> dict:
        """Probabilities by class name for one file, with what was read from it (never patient identifiers)."""
        scan = read_scan(path)
        return self._summary(scan, self.probabilities(scan))

    def lesion_map(
        self, scan: Scan, *, target: str | int | None = None, method: str = "gradcam", opacity: float = 0.5
    ) -> LesionMap:
        """Grad-CAM (or another method) for `target` (default: the predicted class) over the scan."""
        x = self.prepare(scan)
        if target is None:
            probs = self.probabilities(scan)
            index = self.classes.index(max(probs, key=probs.get))
        elif isinstance(target, int):
            index = target
        elif target in self.classes:
            index = self.classes.index(target)
        else:
            raise StudioError(f"unknown class '{target}'; this model knows {', '.join(self.classes)}.")
        if not 0 <= index < len(self.classes):
            raise StudioError(f"class index {index} is out of range for {len(self.classes)} classes.")
        if not 0 <= opacity <= 1:
            raise StudioError("opacity must be between 0 and 1.")
        cam = compute_cam(self.model, x, target=index, method=method)
        box = lesion_box(cam)
        if box is not None:  # from model pixels to scan pixels
            h, w = scan.pixels.shape[:2]
            s = self.spec.image_size
            box = (box[0] * h // s, box[1] * w // s, -(-box[2] * h // s), -(-box[3] * w // s))
        return LesionMap(cam, overlay(scan.pixels, cam, opacity=opacity), box, self.classes[index], method)

    def diagnose(
        self, path: str | Path, *, method: str = "gradcam", target: str | None = None, opacity: float = 0.5
    ) -> dict:
        """Everything the Diagnose tab shows for one file: probabilities, the scan, the overlay with its
        lesion box drawn, and what was read from the file (never patient identifiers)."""
        scan = read_scan(path)
        with self.lock:
            summary = self._summary(scan, self.probabilities(scan))
            lesion = self.lesion_map(scan, target=target or summary["predicted"], method=method, opacity=opacity)
        return {
            **summary,
            "image": np.stack([scan.pixels] * 3, -1) if scan.pixels.ndim == 2 else scan.pixels,
            "overlay": draw_box(lesion.overlay, lesion.box, scan.pixels.shape[:2]),
            "lesion_box": lesion.box,
            "target": lesion.target,
            "method": method,
        }

    @torch.no_grad()
    def view_logits(self, scan: Scan, *, seed: int = 0) -> tuple[list[float], list[float]]:
        """Logits of two training-style views of one scan: (teacher on view 1, student on view 2)."""
        from core.augment import TrainAugment

        arr = torch.from_numpy(to_model_array(scan, size=self.spec.image_size, channels=self.spec.channels))
        x = arr.unsqueeze(0).to(self.device)
        aug = TrainAugment(size=self.spec.image_size)
        g = torch.Generator(device=self.device).manual_seed(int(seed))
        teacher, student = (self.model(aug(x, generator=g))[0].float().cpu().tolist() for _ in range(2))
        return teacher, student
