"""Out-of-distribution guard: is a scan like the data the model was trained on?

Method: Mahalanobis distance with class means and one shared covariance (Lee et al., NeurIPS 2018),
measured on four layers and needing no outlier data: the penultimate features (the projector's 128 values
before the last linear layer), a mid-depth backbone block mean-pooled over space, an early block pooled to
its mean and standard deviation over space, and the input itself summarised (`input_statistics`). The
penultimate layer catches scans of another kind; the deeper blocks catch scans whose texture and intensity
statistics differ (noise, blank or saturated images), the early one the fine noise that resizing a large
scan to the model's input softens. The input statistics do not depend on what the model learned: a model
trained for a few epochs has features too spread out to set noise apart (a quick-preset model scored
uniform noise 0.56 of its threshold), but noise has no neighbour correlation and a blank scan no spread,
whatever the model. Each layer's distance is divided by its 99th percentile on the validation split, and the
score is the largest of them. The threshold is the conformal rank of the validation scores
(`conformal_threshold`): of n, the ceil((n + 1) x 0.99)-th smallest, the rank at which a new scan exchangeable
with them scores above it with probability at most 1 in 100, however few they are (Vovk et al. 2005;
Angelopoulos & Bates, "A gentle introduction to conformal prediction", 2021). The plain 99th percentile, used
before, sits lower: drawing the validation scans again and again from fresh demo scans (bench/ood.py's
`threshold_rules`), it flagged 1.8 in 100 of the other fresh scans on average from 200 validation scans (a
quick-preset run's) and 1.15 from 1,000 (the demo model's); the conformal rank 1.2 and 1.05. The rest is the
scales, set on the same scans: set on one half and the threshold on the other, the rate is 1.0 from either,
but a threshold from half as many scans sits so much higher on the input statistics' long tail that uniform
noise at 16 px passes. A detector saved with fewer layers (before the early layer or the input statistics)
keeps working with those, and one saved before the conformal threshold keeps its threshold until refitted
(`python -m core.ood`).

A model trained on greyscale scans (one channel) sees a scan as its grey level alone, so a colour image given
to it (a photograph, a dermoscopy or fundus image) is not its kind of scan, however ordinary its grey level
looks: `colour_for_greyscale` says so from the scan as read, before it is turned grey, and Diagnose flags it
whatever the score (a quick-preset model's check scored a colour photograph of a coffee cup 0.54 of its
threshold).

`python -m core.ood --model RUN_OR_FILE` fits the detector for a saved model (runs fit it when they
finish). Tensors go to ``<model>.ood.safetensors`` beside the weights, the record (threshold, layers,
flag rates) into the model's JSON under ``"ood"``; never a pickle.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from core import cli
from core.cli import model_command
from core.errors import StudioError
from core.evaluate import predict_logits
from core.model import (
    Classifier,
    early_layer,
    mid_layer,
    refittable_model_path,
    resolve_model_path,
    write_safetensors,
)

METHOD = "mahalanobis (Lee et al. 2018), shared covariance, penultimate + mid-depth + early features + input statistics"
LAYERS = ("penultimate", "mid", "early", "input")
MODEL_LAYERS = LAYERS[:3]  # what a detector saved before the input statistics were added holds
FIRST_LAYERS = LAYERS[:2]  # what a detector saved before the early layer holds
# the input's brightness distribution: these quantiles of its grey level (nearest rank)
INPUT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
QUANTILE = 0.99
SHRINK = 0.01  # ridge added to the covariance, relative to its mean variance: stable with few images
# training images used to fit (evenly spaced): on the demo model 2,000 flag the same outliers as all 5,000
# (bench/results/ood-demo-model.json), and a run's end passes 3,000 fewer images through the model
FIT_MAX = 2_000
# a pixel is coloured when its channels differ by more than COLOUR_CHROMA of 255 (JPEG's chroma noise in a grey
# scan stays under it), a scan is in colour when over COLOUR_SHARE of its pixels are: scikit-image's colour
# photographs have 42-95%, pydicom's colour test images 60-92%, its greyscale ultrasound with a Doppler box
# or coloured marks 0.6-6% (bench/ood.py, docs/benchmarks.md)
COLOUR_CHROMA = 25
COLOUR_SHARE = 0.25
COLOUR_SAMPLE = 1_000_000  # pixels looked at, at most about


def colour_share(pixels: np.ndarray) -> float:
    """The share of a scan's pixels (uint8, (H, W) or (H, W, 3)) that are coloured (`COLOUR_CHROMA`); 0 for grey.
    Counted on at most about a million evenly spaced pixels (a 64-megapixel scan took 4.7 s in full)."""
    if pixels.ndim == 2 or pixels.size == 0:
        return 0.0
    step = max(1, math.ceil(math.sqrt(pixels.shape[0] * pixels.shape[1] / COLOUR_SAMPLE)))
    r, g, b = (pixels[::step, ::step, c].astype(np.int16) for c in range(3))
    chroma = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    return float((chroma > COLOUR_CHROMA).mean())


def colour_for_greyscale(channels: int, pixels: np.ndarray) -> bool:
    """Whether a scan is a colour image (`COLOUR_SHARE`) given to a model of greyscale scans (`channels` 1 in
    its spec), which sees the grey level only and cannot judge it: the rule Diagnose applies whatever the score."""
    return channels == 1 and colour_share(pixels) > COLOUR_SHARE


@contextmanager
def capture_features(model: Classifier, *, first: bool = False):
    """Within the block every forward of `model` also leaves its features in the yielded dict:
    `penultimate` (B, D), `mid` (B, K), `early` (B, 2E: the means, then the standard deviations) and
    `input` (`input_statistics` of what the model was given), float32. With `first`, only the block's first
    forward does (a lesion map's later passes run on masked copies of the scan)."""
    out: dict[str, torch.Tensor] = {}

    def keep(name: str, summarise, x: torch.Tensor) -> None:  # a hook that returned a value would replace the output
        if not (first and name in out):  # a lesion map's masked passes are not summarised at all
            out[name] = summarise(x.detach())

    head = model.projector[-1]
    hooks = [
        model.register_forward_pre_hook(lambda _m, args: keep("input", input_statistics, args[0])),
        head.register_forward_pre_hook(lambda _m, args: keep("penultimate", torch.Tensor.float, args[0])),
        mid_layer(model).register_forward_hook(lambda _m, _i, o: keep("mid", _spatial_mean, o)),
        early_layer(model).register_forward_hook(lambda _m, _i, o: keep("early", _mean_and_std, o)),
    ]
    try:
        yield out
    finally:
        for h in hooks:
            h.remove()


def _spatial_mean(o: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) activations -> (B, K) float32: each channel's mean over space."""
    return o.float().mean(dim=(2, 3))


def _mean_and_std(o: torch.Tensor) -> torch.Tensor:
    """(B, E, H, W) activations -> (B, 2E): each channel's mean and standard deviation over space."""
    o = o.float().flatten(2)
    return torch.cat([o.mean(2), o.std(2, correction=0)], dim=1)


def input_statistics(x: torch.Tensor) -> torch.Tensor:
    """What a scan looks like before any learned layer, (B, C, H, W) normalised input -> (B, 2C + 11)
    float32: each channel's mean and standard deviation, quantiles of the grey level (`INPUT_QUANTILES`),
    and the grey level's correlation with its neighbour one and two pixels away, across and down. Scans
    keep neighbouring pixels alike (about 0.85 on the demo data, 0.95 in a CT slice); noise does not (about
    0.25 after resizing) and a blank scan has no spread at all (0 here). Measured at the model's input size,
    the same way for the training data and a scan."""
    x = x.detach().float()
    grey = x.mean(1)
    flat = grey.flatten(1).sort(dim=1).values
    ranks = torch.tensor(INPUT_QUANTILES, device=x.device) * (flat.shape[1] - 1)
    quantiles = flat[:, ranks.round().long()]
    neighbours = [_correlation(grey[:, :, s:], grey[:, :, :-s]) for s in (1, 2)]  # across
    neighbours += [_correlation(grey[:, s:, :], grey[:, :-s, :]) for s in (1, 2)]  # down
    return torch.cat([x.mean((2, 3)), x.std((2, 3), correction=0), quantiles, torch.stack(neighbours, 1)], 1)


def _correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each image's `a` with its `b` (B,); 0 where either has no spread (a blank
    scan's float round-off, under 1e-8 in variance, is not spread: one grey level in a thousand pixels is
    3e-7 after normalising)."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    va, vb = a.square().mean(1), b.square().mean(1)
    spread = (va * vb).sqrt()
    return (a * b).mean(1) / spread.clamp_min(1e-12) * ((va > 1e-8) & (vb > 1e-8))


@torch.no_grad()
def features(model: Classifier, images: torch.Tensor, *, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """The check's layers (`LAYERS`, float64) and the logits (float32), on the CPU, for uint8 images (N, C, H, W):
    one float32 pass serves the metrics, the calibration and this check."""
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in LAYERS}
    with capture_features(model) as feats:

        def keep():
            for k in LAYERS:
                parts[k].append(feats[k].double().cpu())

        logits = predict_logits(model, images, batch_size=batch_size, after_batch=keep).cpu()
    return {"logits": logits, **{k: torch.cat(v) if v else torch.empty(0) for k, v in parts.items()}}


@dataclass
class Detector:
    """Per layer (`LAYERS`, or `MODEL_LAYERS` / `FIRST_LAYERS` for an older detector): class means (C, D),
    the inverse shared covariance (D, D) and the layer's scale; `threshold` on the combined score. Scores
    above the threshold are out of distribution."""

    means: dict[str, torch.Tensor]
    precisions: dict[str, torch.Tensor]
    scales: dict[str, float]
    threshold: float

    def layer_distance(self, layer: str, f: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance to the nearest class mean, (N,)."""
        d = f.double()[:, None, :] - self.means[layer][None]
        return torch.einsum("ncd,de,nce->nc", d, self.precisions[layer], d).amin(1)

    def score(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """The combined score (N,) float64: the largest of the layers' distances over their scales."""
        return torch.stack([self.layer_distance(k, feats[k].cpu()) / self.scales[k] for k in self.layers]).amax(0)

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.means)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            f"{k}.{part}": getattr(self, part)[k].contiguous() for k in self.layers for part in ("means", "precisions")
        }


def _gaussian(f: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means of the classes present, and the inverse of the shared (shrunk) covariance."""
    present = [int(c) for c in torch.unique(labels)]
    means = torch.stack([f[labels == c].mean(0) for c in present])
    centred = f - means[torch.searchsorted(torch.tensor(present), labels)]
    cov = centred.T @ centred / max(len(f), 1)
    ridge = SHRINK * float(torch.diagonal(cov).mean()) + 1e-8
    return means, torch.linalg.inv(cov + ridge * torch.eye(f.shape[1], dtype=f.dtype))


def _quantile(x: torch.Tensor) -> float:
    return float(torch.quantile(x, QUANTILE))


def conformal_threshold(scores: torch.Tensor, q: float = QUANTILE) -> float:
    """The ceil((n + 1) q)-th smallest of n validation `scores` (the largest, when n is too small for that
    rank): a new score exchangeable with them exceeds it with probability at most 1 - q."""
    ordered = torch.sort(scores.flatten()).values
    rank = min(math.ceil((len(ordered) + 1) * q - 1e-9), len(ordered))  # 1e-9: (n + 1) q's float round-off
    return float(ordered[rank - 1])


def fit(
    train: dict[str, torch.Tensor],
    train_labels: torch.Tensor,
    val: dict[str, torch.Tensor],
    *,
    layers: tuple[str, ...] = LAYERS,
) -> Detector:
    """Fit on training features (see `features`); set the layers' scales and the threshold on validation ones.
    `layers` picks fewer (bench/ood.py compares the check with and without one)."""
    if len(train_labels) < 2 or len(val["penultimate"]) < 1:
        raise StudioError("the out-of-distribution check needs training and validation images.")
    means, precisions = {}, {}
    for k in layers:
        means[k], precisions[k] = _gaussian(train[k], train_labels.cpu())
    det = Detector(means, precisions, {k: 1.0 for k in layers}, 1.0)
    det.scales = {k: max(_quantile(det.layer_distance(k, val[k])), 1e-12) for k in layers}
    det.threshold = conformal_threshold(det.score(val))
    return det


def fit_sample(n: int, most: int = FIT_MAX) -> torch.Tensor:
    """Which of `n` training images the detector is fitted on: all, or `most` evenly spaced ones."""
    return torch.linspace(0, n - 1, min(n, most)).round().long()


def flagged(det: Detector, feats: dict[str, torch.Tensor]) -> float | None:
    """The share of images the detector flags; None for none."""
    return float((det.score(feats) > det.threshold).double().mean()) if len(feats["penultimate"]) else None


def fit_and_save(
    model: Classifier, model_path: str | Path, data, val: dict, test: dict, *, batch_size: int = 256
) -> dict:
    """Fit the detector of `model` on `data`'s training split (`val`/`test`: that data's `features`), write it
    beside the model and return the record for its JSON."""
    keep = fit_sample(len(data.train.images))
    det = fit(features(model, data.train.images[keep], batch_size=batch_size), data.train.labels[keep], val)
    rates = {"val_rate": flagged(det, val), "test_rate": flagged(det, test)}
    return save(det, model_path, record(det, **rates, fitted_on=len(keep), modalities=data.modalities))


def detector_path(model_path: str | Path) -> Path:
    """Where a model's detector tensors live: beside its weights, `<stem>.ood.safetensors`."""
    weights = resolve_model_path(model_path)
    return weights.with_name(f"{weights.stem}.ood.safetensors")


def record(
    det: Detector, *, val_rate: float | None, test_rate: float | None, fitted_on: int, modalities: list[str] | None
) -> dict:
    """What goes into the model's JSON under "ood"; `modalities`: the training data's (`Dataset.modalities`),
    by which Diagnose flags a DICOM file of another modality."""
    return {
        "method": METHOD,
        "layers": list(det.layers),
        "threshold": det.threshold,
        "scales": det.scales,
        "quantile": QUANTILE,
        "fitted_on": {"split": "train", "images": fitted_on},
        "threshold_from": "val",
        "threshold_rule": "conformal",  # absent: the plain quantile, as detectors were fitted before
        "flagged_val": val_rate,
        "flagged_test": test_rate,
        "modalities": modalities,
        "file": None,  # set by save()
    }


def save(det: Detector, model_path: str | Path, rec: dict) -> dict:
    """Write the tensors beside the model; returns `rec` naming the file (the caller stores it in model.json)."""
    path = detector_path(model_path)
    write_safetensors(path, det.tensors())
    return {**rec, "file": path.name}


def load(model_path: str | Path, meta: dict) -> Detector | None:
    """The model's detector, or None when it has none (a model saved before the check existed)."""
    rec = meta.get("ood")
    if not rec:
        return None
    path = resolve_model_path(model_path).with_name(rec.get("file") or "")
    try:
        layers = tuple(rec.get("layers") or FIRST_LAYERS)
        if not set(layers) <= set(LAYERS):
            raise ValueError(f"unknown layers {sorted(set(layers) - set(LAYERS))}")
        tensors = load_file(path)
        return Detector(
            {k: tensors[f"{k}.means"].double() for k in layers},
            {k: tensors[f"{k}.precisions"].double() for k in layers},
            {k: float(rec["scales"][k]) for k in layers},
            float(rec["threshold"]),
        )
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
        raise StudioError(f"{path.name}: the out-of-distribution check cannot be read ({e}).") from None


def fit_saved(model_path: str | Path, *, data=None, device: str | torch.device = "cpu") -> dict:
    """Fit the detector of a saved model on its own data (rebuilt from its JSON unless given) and record it
    in the model's JSON. Returns the record."""
    from core.evaluate import load_trained
    from core.runs import write_json

    target = refittable_model_path(model_path).with_suffix(".json")  # before any work
    model, _, meta, data = load_trained(model_path, data=data, device=device)
    val, test = features(model, data.val.images), features(model, data.test.images)
    meta["ood"] = fit_and_save(model, model_path, data, val, test)
    write_json(target, meta)
    return meta["ood"]


def main(argv: list[str] | None = None) -> int:
    def show(rec: dict) -> dict:
        return {k: v for k, v in rec.items() if k != "scales"}

    return model_command("python -m core.ood", __doc__, fit_saved, show, argv)


if __name__ == "__main__":
    cli.run(main)
