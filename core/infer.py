"""Run a saved model on scans: class probabilities and lesion maps, with the same preprocessing as evaluation."""

from __future__ import annotations

import numbers
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core import ood
from core.augment import eval_transform
from core.cam import (
    cams_and_logits,
    check_method,
    check_opacity,
    compute_cams,
    draw_box,
    lesion_box,
    overlay,
    shown,
)
from core.device import amp_dtype
from core.errors import StudioError
from core.evaluate import answered_probs
from core.imageio import Scan, read_scan, to_model_array
from core.model import load_model
from core.serving import Batcher
from core.trust import (
    BURNED_IN_MESSAGE,
    COLOUR_MESSAGE,
    LOW_CONFIDENCE,
    LOW_CONFIDENCE_MESSAGE,
    MODALITY_MESSAGE,
    OOD_MESSAGE,
    UNFINISHED_MESSAGE,
    UNLEARNED,
    UNLEARNED_MESSAGE,
    is_no_finding,
    training_warnings,
    unfinished_run,
    untrusted,
)

# Scans per forward and backward pass of a diagnosis: a pass keeps every scan's activations until its maps
# are drawn, so a large upload in one pass grew the peak memory by 4-7 MB a scan (200 scans: +0.8 GB with
# the demo model, +1.3 GB with a 224 px ResNet-18); in passes of 32 it stays that of 32 whatever the upload
# (bench/diagnose_memory.py)
PASS_SCANS = 32


@dataclass
class LesionMap:
    """A lesion map for one scan: `cam` float (S, S) in [0, 1], `overlay` uint8 (h, w, 3) drawn over `image`
    (the scan as shown: `core.cam.shown`, at most 1024 px), `box` in scan pixels (None for an empty map, or for
    a map of a no-finding class: `no_finding`)."""

    cam: np.ndarray
    overlay: np.ndarray
    box: tuple[int, int, int, int] | None
    target: str
    method: str
    no_finding: bool
    image: np.ndarray


class Predictor:
    """A loaded model ready for scans. Reuse one instance: loading is the slow part."""

    def __init__(self, model_path: str | Path, *, device: str | torch.device = "cpu"):
        self.model, self.spec, self.meta = load_model(model_path, device=device)
        self.detector = ood.load(model_path, self.meta)  # None for a model saved before the check existed
        self.modalities = (self.meta.get("ood") or {}).get("modalities")  # None unless trained on DICOM files only
        self.warnings = training_warnings(model_path, self.meta)
        self.unlearned = any(w.get("kind") in UNLEARNED for w in self.warnings)
        self.unfinished = unfinished_run(model_path, self.meta)  # the studio refuses such a model; core.predict warns
        self.device = torch.device(device)
        self.lock = threading.RLock()  # feature and lesion-map hooks go on the shared model: one at a time
        self.batcher = Batcher(self._diagnose_batch)  # concurrent diagnoses share one batched pass
        self._pass_seconds: dict[torch.dtype | None, float] = {}  # a forward pass per scan, by precision

    @property
    def classes(self) -> list[str]:
        return self.spec.classes

    def prepare(self, scan: Scan) -> torch.Tensor:
        """A scan as the network sees it: (1, 3, S, S) normalised, exactly as evaluation prepares data."""
        return self.prepare_many([scan])

    def prepare_many(self, scans: list[Scan]) -> torch.Tensor:
        """Scans as the network sees them, (N, 3, S, S)."""
        arrays = [
            to_model_array(scan, size=self.spec.image_size, channels=self.spec.channels, resize=self.spec.resize)
            for scan in scans
        ]
        return eval_transform(torch.from_numpy(np.stack(arrays)).to(self.device))

    @property
    def calibrated(self) -> bool:
        return "calibration" in self.meta

    @torch.no_grad()
    def assess_many(self, scans: list[Scan]) -> list[tuple[dict[str, float], float | None]]:
        """For each scan: class probabilities (temperature-scaled when the model carries a calibration) and
        the out-of-distribution score in units of the threshold (above 1: unlike the training data; None
        when the model has no detector), from one forward pass over them all."""
        return self._assess(self.prepare_many(scans))

    @torch.no_grad()
    def _assess(self, x: torch.Tensor) -> list[tuple[dict[str, float], float | None]]:
        with self.lock, ood.capture_features(self.model) as feats:
            return self._answers(self.model(x), feats)

    def _answers(self, logits: torch.Tensor, feats: dict) -> list[tuple[dict[str, float], float | None]]:
        """(probabilities, OOD score) per image from the logits and features of one forward pass."""
        scores = [None] * len(logits)
        if self.detector is not None:
            scores = (self.detector.score(feats) / self.detector.threshold).tolist()
        probs, _ = answered_probs(logits, self.meta)
        rows = zip(probs.cpu().tolist(), scores, strict=True)
        return [(dict(zip(self.classes, p, strict=True)), score) for p, score in rows]

    def assess(self, scan: Scan) -> tuple[dict[str, float], float | None]:
        """`assess_many` for one scan."""
        return self.assess_many([scan])[0]

    def probabilities(self, scan: Scan) -> dict[str, float]:
        """Class probabilities, temperature-scaled when the model carries a calibration."""
        return self.assess(scan)[0]

    def _summary(self, scan: Scan, probs: dict[str, float], score: float | None) -> dict:
        best = max(probs, key=probs.get)
        mismatch, why = self._mismatch(scan)  # not the model's kind of scan, whatever the score
        outside = True if mismatch else None if score is None else bool(score > 1.0)
        low = probs[best] < LOW_CONFIDENCE
        warnings = ([UNFINISHED_MESSAGE] if self.unfinished else []) + ([UNLEARNED_MESSAGE] if self.unlearned else [])
        warnings += ([OOD_MESSAGE] if outside else []) + ([why] if why else [])
        warnings += [LOW_CONFIDENCE_MESSAGE] if low else []
        warnings += [BURNED_IN_MESSAGE] if scan.info.get("burned_in_annotation") else []
        return {
            "predicted": best,
            "confidence": probs[best],
            "probabilities": probs,
            "calibrated": self.calibrated,
            "model_learned": not self.unlearned,
            "low_confidence": low,
            "in_distribution": None if outside is None else not outside,
            "ood_score": score,
            "mismatch": mismatch,
            "warnings": warnings,
            "scan": scan.info,
        }

    def _mismatch(self, scan: Scan) -> tuple[str | None, str | None]:
        """What makes a scan unlike the training data however its features score, in a few words and as the
        warning: a colour image for a model of greyscale scans (it sees the grey level only), or a DICOM
        file of a modality that none of the model's training files had; (None, None) for neither."""
        if ood.colour_for_greyscale(self.spec.channels, scan.pixels):
            return "a colour image", COLOUR_MESSAGE
        modality = scan.info.get("modality") if scan.info.get("format") == "DICOM" else None
        if self.modalities and modality not in (None, "unknown", *self.modalities):
            trained = ", ".join(self.modalities)
            return f"modality {modality}", MODALITY_MESSAGE.format(modality=modality, trained=trained)
        return None, None

    def predict(self, path: str | Path) -> dict:
        """Probabilities by class name for one file, whether it is like the training data, and what was read
        from it (never patient identifiers)."""
        scan = read_scan(path)
        return self._summary(scan, *self.assess(scan))

    def cam_seconds(self, method: str) -> float:
        """About how long one lesion map takes on this device, from the better of two timed passes of a batch:
        ScoreCAM runs the model once per channel of the mapped layer (in its masked passes' precision), the
        others about three passes."""
        from core.estimate import TIMING
        from core.model import cam_layer

        check_method(method)
        dtype = amp_dtype(self.device) if method == "scorecam" else None
        if dtype not in self._pass_seconds:
            x = torch.zeros(32, 3, self.spec.image_size, self.spec.image_size, device=self.device)
            autocast = torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
            # not beside the Train tab's probe, which a page load starts too: each would time the other's work
            with TIMING, self.lock, torch.no_grad(), autocast:
                self.model(x[:1])  # warm-up
                timed = []
                for _ in range(2):  # the better of two: a batch's first pass picks its kernels
                    start = time.perf_counter()
                    self.model(x)
                    if self.device.type == "cuda":  # its kernels run after the call returns
                        torch.cuda.synchronize(self.device)
                    timed.append(time.perf_counter() - start)
                self._pass_seconds[dtype] = min(timed) / 32
        if method != "scorecam":
            return 3 * self._pass_seconds[dtype]
        layers = reversed(list(cam_layer(self.model).modules()))
        channels = next(m.out_channels for m in layers if hasattr(m, "out_channels"))
        return channels * self._pass_seconds[dtype]

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
            "resize": self.spec.resize,  # how a scan of another size is brought to image_size, as in training
            "arch": self.spec.arch,
            "method": m.get("method"),
            "temperatures": m.get("temperatures"),
            "epochs": cfg.get("epochs"),
            "best_epoch": m.get("epoch"),
            "metrics": m.get("metrics") or {},
            # what answering at random scores, to read the metrics against: balanced accuracy 1/C, AUC 0.5
            "chance": {"balanced_accuracy": 1 / len(self.classes), "auc": 0.5},
            "calibration": {
                "temperature": cal.get("temperature"),
                "test_ece_before": (cal.get("test") or {}).get("ece_before"),
                "test_ece_after": (cal.get("test") or {}).get("ece_after"),
            }
            if cal
            else None,
            "ood": {
                **{k: check.get(k) for k in ("method", "threshold", "flagged_val", "flagged_test", "modalities")},
                "layers": list(self.detector.layers) if self.detector else None,  # as loaded: older checks have fewer
            }
            if check
            else None,
            "run": m.get("run"),
            "warnings": self.warnings,
            "learned": not self.unlearned,
            "unfinished": self.unfinished,
        }

    def target_index(self, target: str | int) -> int:
        """A class given by name or index, checked against this model's classes."""
        if isinstance(target, str):
            if target not in self.classes:
                raise StudioError(f"unknown class '{target}'; this model knows {', '.join(self.classes)}.")
            return self.classes.index(target)
        if not isinstance(target, numbers.Integral) or isinstance(target, bool):  # from JSON: a list, 1.5, true
            raise StudioError(f"a class is its name or its index, not {target!r}.")
        if not 0 <= target < len(self.classes):
            raise StudioError(f"class index {target} is out of range for {len(self.classes)} classes.")
        return int(target)

    def lesion_maps(
        self, scans: list[Scan], targets: list[str | int], *, method: str = "gradcam", opacity: float = 0.5
    ) -> list[LesionMap]:
        """Grad-CAM (or another method) for each scan's target class, in one batched pass."""
        check_opacity(opacity)
        indices = [self.target_index(t) for t in targets]
        with self.lock:
            cams = compute_cams(self.model, self.prepare_many(scans), indices, method=method)
        return [self._lesion(*args, method, opacity) for args in zip(scans, cams, indices, strict=True)]

    def _lesion(
        self, scan: Scan, cam: np.ndarray, index: int, method: str, opacity: float, *, boxed: bool = True
    ) -> LesionMap:
        """A computed map with its overlay on the scan and its lesion box in scan pixels (none for a map of a
        no-finding class, nor without `boxed`)."""
        no_finding = is_no_finding(self.classes[index])
        box = None if no_finding or not boxed else lesion_box(cam)
        if box is not None:  # from model pixels to scan pixels
            h, w = scan.pixels.shape[:2]
            s = self.spec.image_size
            box = (box[0] * h // s, box[1] * w // s, -(-box[2] * h // s), -(-box[3] * w // s))
        image = shown(scan.pixels)  # the scan is drawn at this size: the answer keeps no larger copy
        return LesionMap(
            cam, overlay(image, cam, opacity=opacity), box, self.classes[index], method, no_finding, image=image
        )

    def lesion_map(
        self, scan: Scan, *, target: str | int | None = None, method: str = "gradcam", opacity: float = 0.5
    ) -> LesionMap:
        """Grad-CAM (or another method) for `target` (default: the predicted class) over the scan."""
        if target is None:
            probs = self.probabilities(scan)
            target = max(probs, key=probs.get)
        return self.lesion_maps([scan], [target], method=method, opacity=opacity)[0]

    def diagnose(
        self, path: str | Path, *, method: str = "gradcam", target: str | None = None, opacity: float = 0.5
    ) -> dict:
        """Everything the Diagnose tab shows for one file: probabilities, whether to trust them, the scan,
        the lesion map (`cam`, kept so a new opacity redraws without recomputing) and the overlay with its
        lesion box, and what was read from the file (never patient identifiers)."""
        (result,) = self.diagnose_scans([read_scan(path)], method=method, target=target, opacity=opacity)
        return result

    def diagnose_scans(
        self, scans: list[Scan], *, method: str = "gradcam", target: str | None = None, opacity: float = 0.5
    ) -> list[dict]:
        """`diagnose` for scans already read. The scans go in one batch with those of other threads calling at
        the same time (core.serving), so concurrent requests share one forward and backward pass."""
        self._check_request(method, target, opacity)
        passes = self.batcher.run([(scan, target) for scan in scans], method)
        # drawing happens in the caller's thread, so it overlaps the next batch's pass on the model
        return [self._diagnosis(scan, *found, method, opacity) for scan, found in zip(scans, passes, strict=True)]

    def _check_request(self, method: str, target: str | None, opacity: float) -> None:
        check_method(method)
        if target is not None:
            self.target_index(target)  # a bad class is this caller's error, not its batch's
        check_opacity(opacity)

    def _diagnose_batch(self, items: list[tuple[Scan, str | None]], method: str) -> list[tuple]:
        """The model's part of a diagnosis, for a batch: (probabilities, OOD score, map, class) per scan, in
        passes of at most `PASS_SCANS` scans."""
        wanted = [None if target is None else self.target_index(target) for _, target in items]
        found = []
        with self.lock:
            for start in range(0, len(items), PASS_SCANS):
                part = slice(start, start + PASS_SCANS)
                x = self.prepare_many([scan for scan, _ in items[part]])
                with ood.capture_features(self.model, first=True) as feats:  # one pass: answer and map
                    cams, logits, indices = cams_and_logits(self.model, x, wanted[part], method=method)
                    answers = self._answers(logits, feats)
                found += [(*a, cam, index) for a, cam, index in zip(answers, cams, indices, strict=True)]
        return found

    def _diagnosis(
        self, scan: Scan, probs: dict, score: float | None, cam: np.ndarray, index: int, method: str, opacity: float
    ) -> dict:
        summary = self._summary(scan, probs, score)
        # the map still shows where the model looked, but a box says "the lesion is here"
        lesion = self._lesion(scan, cam, index, method, opacity, boxed=not untrusted(summary))
        return {
            **summary,
            "image": lesion.image,  # at most 1024 px, like the overlay: a large upload holds no full-size copies
            "cam": lesion.cam,
            "overlay": draw_box(lesion.overlay, lesion.box, scan.pixels.shape[:2]),
            "lesion_box": lesion.box,
            "target": lesion.target,
            "target_no_finding": lesion.no_finding,
            "target_probability": summary["probabilities"][lesion.target],
            "method": method,
        }

    def diagnose_files(
        self, paths: list[str | Path], *, method: str = "gradcam", target: str | None = None, opacity: float = 0.5
    ) -> list[dict]:
        """`diagnose` for each file in order, the readable ones in batches of `PASS_SCANS`; a file that cannot
        be read gives `{"error": message}` in its place, so one bad file never sinks a batch. Files are read a
        batch at a time, so a large upload never holds more than one batch of full-size scans."""
        self._check_request(method, target, opacity)  # before any file is read
        return self._files(
            paths, lambda scans: self.diagnose_scans(scans, method=method, target=target, opacity=opacity)
        )

    def predict_files(self, paths: list[str | Path]) -> list[dict]:
        """`predict` for each file in order, a batch of `PASS_SCANS` files to a forward pass; a file that cannot
        be read gives `{"error": message}` in its place."""

        def answer(scans: list[Scan]) -> list[dict]:
            return [self._summary(s, *a) for s, a in zip(scans, self.assess_many(scans), strict=True)]

        return self._files(paths, answer)

    def _files(self, paths: list[str | Path], answer) -> list[dict]:
        """`answer(scans)` for the readable files of each batch of `PASS_SCANS`, read just before it; a file
        that cannot be read gets `{"error": message}` in its place."""
        out: list[dict] = []
        for start in range(0, len(paths), PASS_SCANS):
            scans: dict[int, Scan] = {}
            part: list[dict] = []
            for i, path in enumerate(paths[start : start + PASS_SCANS]):
                try:
                    scans[i] = read_scan(path)
                    part.append({})
                except StudioError as e:
                    part.append({"error": str(e)})
            for i, result in zip(scans, answer(list(scans.values())) if scans else [], strict=True):
                part[i] = result
            out += part
        return out

    @torch.no_grad()
    def view_logits(self, scan: Scan, *, seed: int = 0) -> tuple[list[float], list[float]]:
        """Logits of two training-style views of one scan: (teacher on view 1, student on view 2)."""
        from core.augment import TrainAugment

        arr = torch.from_numpy(
            to_model_array(scan, size=self.spec.image_size, channels=self.spec.channels, resize=self.spec.resize)
        )
        x = arr.unsqueeze(0).to(self.device)
        aug = TrainAugment(size=self.spec.image_size)
        g = torch.Generator(device=self.device).manual_seed(int(seed))
        teacher, student = (self.model(aug(x, generator=g))[0].float().cpu().tolist() for _ in range(2))
        return teacher, student


def scan_hw(answer: dict) -> tuple[int, int]:
    """The height and width of an answer's scan (its `scan["size"]` is width, height), in which its box is."""
    width, height = answer["scan"]["size"]
    return height, width


def redraw(
    image: np.ndarray,
    cam: np.ndarray,
    box: tuple[int, int, int, int] | None,
    opacity: float,
    hw: tuple[int, int],
) -> np.ndarray:
    """The overlay of a stored map at another opacity, with its lesion box: no model, no recomputation.
    `image` is the answer's (the scan as shown, at most 1024 px), `box` in the pixels of the scan, whose height
    and width are `hw` (`scan_hw(answer)`): a large scan's box is scaled to the image."""
    check_opacity(opacity)
    return draw_box(overlay(image, cam, opacity=opacity), box, hw)
