"""Classification metrics and the `python -m core.evaluate` command.

Metrics: accuracy, balanced accuracy, AUC (binary for two classes, macro one-vs-rest otherwise),
per-class sensitivity and specificity, macro F1, confusion matrix, expected calibration error (15 bins).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, roc_auc_score

from core import cli
from core.augment import eval_transform
from core.cli import MODEL_HELP
from core.errors import StudioError
from core.runs import Run


def reliability_bins(probs: np.ndarray, labels: np.ndarray, *, bins: int = 15) -> list[dict]:
    """Equal-width confidence bins: count, mean confidence and accuracy of the predictions in each."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        out.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": int(sel.sum()),
                "confidence": float(conf[sel].mean()) if sel.any() else None,
                "accuracy": float(correct[sel].mean()) if sel.any() else None,
            }
        )
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, *, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    n = max(len(labels), 1)
    return float(
        sum(
            b["count"] / n * abs(b["accuracy"] - b["confidence"])
            for b in reliability_bins(probs, labels, bins=bins)
            if b["count"]
        )
    )


def auc(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """Binary AUC for two classes, macro one-vs-rest otherwise, over the classes present; None if undefined."""
    present = np.unique(labels)
    if len(present) < 2:
        return None
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    scores = [roc_auc_score(labels == c, probs[:, c]) for c in present]
    return float(np.mean(scores))


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """All evaluation metrics for class probabilities (N, C) against labels (N,)."""
    pred = probs.argmax(1)
    cm = confusion_matrix(labels, pred, labels=list(range(len(classes))))
    tp = np.diag(cm)
    fn = cm.sum(1) - tp
    fp = cm.sum(0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), np.nan)
        spec = np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), np.nan)
    return {
        "n": int(len(labels)),
        "accuracy": float((pred == labels).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
        "auc": auc(probs, labels),
        "f1_macro": float(f1_score(labels, pred, average="macro", labels=np.unique(labels), zero_division=0)),
        "ece": expected_calibration_error(probs, labels),
        "per_class": {
            c: {
                "sensitivity": None if np.isnan(sens[i]) else float(sens[i]),
                "specificity": None if np.isnan(spec[i]) else float(spec[i]),
                "support": int(tp[i] + fn[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 1024,
    amp_dtype: torch.dtype | None = None,
    after_batch: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Logits (N, C) float32 for uint8 images (N, C, H, W), evaluated in batches on the model's device.
    `after_batch` is called after each batch (core.ood reads its feature hooks there)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = eval_transform(images[start : start + batch_size].to(device, non_blocking=True))
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out.append(model(x).float())
        if after_batch is not None:
            after_batch()
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def predict_probs(
    model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 1024, amp_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Softmax probabilities (N, C) float32 for uint8 images (N, C, H, W), on the model's device."""
    logits = predict_logits(model, images, batch_size=batch_size, amp_dtype=amp_dtype)
    return torch.softmax(logits, dim=1) if len(logits) else logits


def load_trained(path: str | Path, *, device: str | torch.device = "cpu", data=None):
    """A saved model with the dataset it was trained on (rebuilt from its JSON unless given), checked to
    have the same classes. Returns (model, spec, meta, data)."""
    from core.config import DataConfig
    from core.data import load_dataset
    from core.model import load_model

    source, path = path, Path(path)  # the word "demo" names the demo model (core.model.DEMO), not a path
    if path.is_dir() and not Run(path).exists():
        raise StudioError(f"{path.name}: not a run folder (no config.json).")
    model, spec, meta = load_model(source, device=device)
    if data is None:
        saved = (meta.get("config") or {}).get("data")
        if not saved:
            raise StudioError(f"{path.name}: the model does not say which data it was trained on.")
        data = load_dataset(DataConfig(**{**saved, "resize": spec.resize}))  # resized as it was trained
    if data.classes != spec.classes:
        raise StudioError(f"{path.name}: the data's classes {data.classes} differ from the model's {spec.classes}.")
    return model, spec, meta, data


def _temperature(meta: dict) -> float:
    """The temperature stored in a model's JSON `meta` by core.calibration; 1 without one."""
    return float((meta.get("calibration") or {}).get("temperature") or 1.0)


def answered_probs(logits: torch.Tensor, meta: dict) -> tuple[torch.Tensor, bool]:
    """The probabilities a model answers for `logits`: divided by the temperature stored in its JSON `meta`
    (core.calibration) when it has one; and whether it had."""
    return torch.softmax(logits.float() / _temperature(meta), dim=-1), "calibration" in meta


def score_split(model: torch.nn.Module, meta: dict, split, classes: list[str]) -> tuple[dict, np.ndarray]:
    """Score `model` (its JSON `meta`) on a `core.dataset.Split`: the metrics of the network's own softmax,
    as the run's end measured them; `calibrated`, for a calibrated model, the temperature and the ECE of the
    probabilities Diagnose and core.predict answer (None without); `chance_acc`, the accuracy of always
    answering the split's most common class. Returns them with the softmax probabilities (N, C)."""
    from core.health import majority_rate

    logits = predict_logits(model, split.images).cpu()
    labels = split.labels.numpy()
    probs = torch.softmax(logits, 1).numpy()
    answered, has_temperature = answered_probs(logits, meta)
    calibrated = None
    if has_temperature:
        calibrated = {
            "temperature": _temperature(meta),  # the one the answers were divided by
            "ece": expected_calibration_error(answered.numpy(), labels),
        }
    result = {}
    for k, v in classification_metrics(probs, labels, classes).items():  # the calibrated ECE after the raw one
        result.update({k: v, "calibrated": calibrated} if k == "ece" else {k: v})
    return {**result, "chance_acc": majority_rate(split.labels)}, probs


def evaluate_run(run: str | Path, *, split: str = "test", device: str = "auto") -> dict:
    """Load a run's best model and its dataset (as configured at training time) and score one split
    (`score_split`)."""
    from core.device import pick_device

    model, _, meta, data = load_trained(run, device=pick_device(device))
    scored, _ = score_split(model, meta, data.split(split), data.classes)
    return {"run": Path(run).name, "split": split, **scored}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.evaluate", description="Score a trained run on one split.")
    ap.add_argument("--model", required=True, help=MODEL_HELP)
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    args = ap.parse_args(argv)
    try:
        result = evaluate_run(args.model, split=args.split, device=args.device)
    except StudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    cli.run(main)
