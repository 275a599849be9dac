"""Run a saved model on scans: class probabilities and lesion maps, with the same preprocessing as evaluation."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core import calibration, ood
from core.augment import eval_transform
from core.cam import compute_cam, draw_box, lesion_box, overlay
from core.errors import StudioError
from core.imageio import Scan, read_scan, to_model_array
from core.model import load_model

LOW_CONFIDENCE = 0.6  # a prediction below this probability is flagged for a second look
OOD_MESSAGE = "Not like the training data: do not trust this prediction"
LOW_CONFIDENCE_MESSAGE = "Low confidence: a second look is needed"


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
        self.detector = ood.load(model_path, self.meta)  # None for a model saved before the check existed
        self.device = torch.device(device)
        self.lock = threading.RLock()  # feature and lesion-map hooks go on the shared model: one at a time

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
    def assess(self, scan: Scan) -> tuple[dict[str, float], float | None]:
        """Class probabilities (temperature-scaled when the model carries a calibration) and the
        out-of-distribution score in units of the threshold (above 1: unlike the training data; None when
        the model has no detector), from one forward pass."""
        with self.lock, ood.capture_features(self.model) as feats:
            logits = self.model(self.prepare(scan))
        probs, _ = calibration.apply(logits[0], self.meta)
        score = None
        if self.detector is not None:
            score = float(self.detector.score(feats)[0]) / self.detector.threshold
        return dict(zip(self.classes, probs.cpu().tolist(), strict=True)), score

    def probabilities(self, scan: Scan) -> dict[str, float]:
        """Class probabilities, temperature-scaled when the model carries a calibration."""
        return self.assess(scan)[0]

    def _summary(self, scan: Scan, probs: dict[str, float], score: float | None) -> dict:
        best = max(probs, key=probs.get)
        outside = None if score is None else bool(score > 1.0)
        low = probs[best] < LOW_CONFIDENCE
        warnings = ([OOD_MESSAGE] if outside else []) + ([LOW_CONFIDENCE_MESSAGE] if low else [])
        return {
            "predicted": best,
            "confidence": probs[best],
            "probabilities": probs,
            "calibrated": self.calibrated,
            "low_confidence": low,
            "in_distribution": None if outside is None else not outside,
            "ood_score": score,
            "warnings": warnings,
            "scan": scan.info,
        }

    def predict(self, path: str | Path) -> dict:
        """Probabilities by class name for one file, whether it is like the training data, and what was read
        from it (never patient identifiers)."""
        scan = read_scan(path)
        return self._summary(scan, *self.assess(scan))

    def cam_seconds(self, method: str) -> float:
        """About how long one lesion map takes on this device, from one timed forward pass of a batch: ScoreCAM
        runs the model once per channel of the mapped layer, the others about three passes."""
        from core.cam import CAM_METHODS
        from core.model import cam_layer

        if method not in CAM_METHODS:
            raise StudioError(f"unknown lesion-map method '{method}'.")
        if not hasattr(self, "_pass_seconds"):
            x = torch.zeros(32, 3, self.spec.image_size, self.spec.image_size, device=self.device)
            with self.lock, torch.no_grad():
                self.model(x[:1])  # warm-up
                start = time.perf_counter()
                self.model(x)
                self._pass_seconds = (time.perf_counter() - start) / 32
        if method != "scorecam":
            return 3 * self._pass_seconds
        layers = reversed(list(cam_layer(self.model).modules()))
        channels = next(m.out_channels for m in layers if hasattr(m, "out_channels"))
        return channels * self._pass_seconds

    def card(self) -> dict:
        """What a user should know before trusting this model: data, classes, size, method, metrics,
        calibration and the out-of-distribution threshold, from its JSON."""
        m, cfg = self.meta, self.meta.get("config") or {}
        cal, check = m.get("calibration") or {}, m.get("ood") or {}
        return {
            "data": (cfg.get("data") or {}).get("dataset"),
            "classes": self.classes,
            "image_size": self.spec.image_size,
            "channels": self.spec.channels,
            "arch": self.spec.arch,
            "method": m.get("method"),
            "temperatures": m.get("temperatures"),
            "epochs": cfg.get("epochs"),
            "best_epoch": m.get("epoch"),
            "metrics": m.get("metrics") or {},
            "calibration": {
                "temperature": cal.get("temperature"),
                "test_ece_before": (cal.get("test") or {}).get("ece_before"),
                "test_ece_after": (cal.get("test") or {}).get("ece_after"),
            }
            if cal
            else None,
            "ood": {k: check.get(k) for k in ("method", "threshold", "flagged_val", "flagged_test")} if check else None,
            "run": m.get("run"),
        }

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
        """Everything the Diagnose tab shows for one file: probabilities, whether to trust them, the scan,
        the lesion map (`cam`, kept so a new opacity redraws without recomputing) and the overlay with its
        lesion box, and what was read from the file (never patient identifiers)."""
        scan = read_scan(path)
        with self.lock:
            summary = self._summary(scan, *self.assess(scan))
            lesion = self.lesion_map(scan, target=target or summary["predicted"], method=method, opacity=opacity)
        return {
            **summary,
            "image": np.stack([scan.pixels] * 3, -1) if scan.pixels.ndim == 2 else scan.pixels,
            "cam": lesion.cam,
            "overlay": draw_box(lesion.overlay, lesion.box, scan.pixels.shape[:2]),
            "lesion_box": lesion.box,
            "target": lesion.target,
            "target_probability": summary["probabilities"][lesion.target],
            "method": method,
        }

    def diagnose_files(self, paths: list[str | Path], **kwargs) -> list[dict]:
        """`diagnose` for each file in order; a file that cannot be read gives `{"error": message}` in its
        place, so one bad file never sinks a batch."""
        out = []
        for path in paths:
            try:
                out.append(self.diagnose(path, **kwargs))
            except StudioError as e:
                out.append({"error": str(e)})
        return out

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


def redraw(image: np.ndarray, cam: np.ndarray, box: tuple[int, int, int, int] | None, opacity: float) -> np.ndarray:
    """The overlay of a stored map at another opacity, with its lesion box: no model, no recomputation."""
    if not 0 <= opacity <= 1:
        raise StudioError("opacity must be between 0 and 1.")
    return draw_box(overlay(image, cam, opacity=opacity), box, image.shape[:2])
