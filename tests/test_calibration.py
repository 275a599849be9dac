"""Temperature scaling: recovers a known temperature, lowers NLL on validation, is stored and used."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config

from core.calibration import calibrate, fit_temperature
from core.evaluate import answered_probs, expected_calibration_error
from core.infer import Predictor
from core.train import run_training


def test_fit_recovers_the_temperature_of_overconfident_logits():
    g = torch.Generator().manual_seed(0)
    true = torch.randn(4000, 5, generator=g) * 2
    labels = torch.multinomial(torch.softmax(true, 1), 1, generator=g).flatten()  # labels drawn from softmax(true)
    t = fit_temperature(true * 3.0, labels)  # three times too confident
    assert t == pytest.approx(3.0, rel=0.1)
    probs = torch.softmax(true * 3.0 / t, 1).numpy()
    raw = torch.softmax(true * 3.0, 1).numpy()
    assert expected_calibration_error(probs, labels.numpy()) < expected_calibration_error(raw, labels.numpy())


def test_a_finished_run_carries_its_calibration_and_predictions_use_it(tmp_path):
    run = run_training(tiny_config(tmp_path, epochs=1))
    meta = json.loads((run / "model.json").read_text())
    record = meta["calibration"]
    assert record["fitted_on"] == "val" and record["temperature"] > 0
    assert record["val"]["nll_after"] <= record["val"]["nll_before"] + 1e-6  # the fit's own objective
    assert len(record["val"]["reliability_after"]) == 15
    assert meta["metrics"]["test_ece"] == pytest.approx(record["test"]["ece_before"])  # one pass serves both
    predictor = Predictor(run)
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.3]])
    probs, calibrated = answered_probs(logits[0], predictor.meta)
    assert calibrated and torch.allclose(probs, torch.softmax(logits[0] / record["temperature"], 0))
    again = calibrate(run)  # refitting on the same data gives the same temperature
    assert again["temperature"] == pytest.approx(record["temperature"], rel=1e-6)
    assert np.isfinite(again["test"]["ece_after"])


def test_models_without_calibration_report_plain_softmax():
    probs, calibrated = answered_probs(torch.tensor([1.0, 2.0]), {})
    assert not calibrated and torch.allclose(probs, torch.softmax(torch.tensor([1.0, 2.0]), 0))


@pytest.mark.slow
def test_runs_tab_shows_the_reliability_diagram(tmp_path):
    from core.jobs import JobManager
    from ui.context import Studio
    from ui.runs import make_calibration

    run = run_training(tiny_config(tmp_path, epochs=1))
    jobs = JobManager(run.parent)
    try:
        summary, figure = make_calibration(Studio(data_root=tmp_path, runs_dir=run.parent, jobs=jobs))(run.name, "val")
    finally:
        jobs.close()
    assert summary["fitted_on"] == "val" and "ece_after" in summary["val"]
    assert figure.axes[0].get_xlabel() == "confidence" and len(figure.axes[0].lines) == 3
