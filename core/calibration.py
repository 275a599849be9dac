"""Post-hoc temperature scaling (Guo et al., ICML 2017), fitted on the validation split.

One scalar T divides the logits so that the validation negative log-likelihood is lowest; it changes
confidence, never the predicted class. `python -m core.calibration --model RUN_OR_FILE` fits it and stores
it in the model's JSON with the expected calibration error and reliability bins before and after, on the
validation and test splits; prediction then reports calibrated probabilities.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core import cli
from core.cli import model_command
from core.errors import StudioError
from core.evaluate import expected_calibration_error, load_trained, predict_logits, reliability_bins


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 minimising NLL(softmax(logits / T), labels), searched over log T with LBFGS in float64."""
    if len(labels) == 0:
        raise StudioError("calibration needs at least one validation image.")
    z, y = logits.detach().double().cpu(), labels.cpu()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def calibration_record(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> dict:
    """Fit T on `logits["val"]` and describe it: T, and ECE, NLL and reliability bins before and after on
    each split given (float32 logits (N, C) and labels (N,) on the CPU, keyed by split name)."""
    t = fit_temperature(logits["val"], labels["val"])
    record: dict = {"method": "temperature scaling", "fitted_on": "val", "temperature": t}
    for name, z in logits.items():
        y = labels[name]
        before, after = torch.softmax(z, 1).numpy(), torch.softmax(z / t, 1).numpy()
        record[name] = {
            "ece_before": expected_calibration_error(before, y.numpy()),
            "ece_after": expected_calibration_error(after, y.numpy()),
            "nll_before": float(torch.nn.functional.cross_entropy(z, y)),
            "nll_after": float(torch.nn.functional.cross_entropy(z / t, y)),
            "reliability_before": reliability_bins(before, y.numpy()),
            "reliability_after": reliability_bins(after, y.numpy()),
        }
    return record


def calibrate(model_path: str | Path, *, data=None) -> dict:
    """Fit T on the validation split of the model's own data (loaded from its JSON unless given) and store
    it in the model's JSON. Returns the record."""
    from core.model import refittable_model_path
    from core.runs import write_json

    target = refittable_model_path(model_path).with_suffix(".json")  # before any work
    model, _, meta, data = load_trained(model_path, data=data)
    splits = {"val": data.val, "test": data.test}
    record = calibration_record(
        {k: predict_logits(model, v.images) for k, v in splits.items()}, {k: v.labels for k, v in splits.items()}
    )
    meta["calibration"] = record
    write_json(target, meta)
    return record


def main(argv: list[str] | None = None) -> int:
    def show(record: dict) -> dict:
        summary = {k: record[k] for k in ("method", "fitted_on", "temperature")}
        for split in ("val", "test"):
            summary[split] = {k: round(v, 4) for k, v in record[split].items() if not k.startswith("reliability")}
        return summary

    return model_command("python -m core.calibration", __doc__, calibrate, show, argv)


if __name__ == "__main__":
    cli.run(main)
