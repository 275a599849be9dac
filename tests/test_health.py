"""The collapse rule and the chance check (core.health), on metrics rows and on runs that really train."""

from pathlib import Path

import pytest
import torch

from core import health


def rows(spreads, accs, shares=None):
    shares = shares or [0.3] * len(spreads)
    return [
        {"epoch": i + 1, "logit_spread": s, "val_acc": a, "val_top_class_share": t}
        for i, (s, a, t) in enumerate(zip(spreads, accs, shares, strict=True))
    ]


def test_majority_rate_is_the_share_of_the_most_common_class():
    assert health.majority_rate(torch.tensor([0, 1, 1, 2, 1, 0])) == pytest.approx(0.5)
    assert health.majority_rate(torch.tensor([], dtype=torch.long)) == 0.0


@pytest.mark.parametrize(
    ("spreads", "accs", "epoch"),
    [
        ([0.5, 0.05, 0.04, 0.03], [0.26, 0.25, 0.26, 0.25], 3),  # collapsed from epoch 2 on
        ([0.5, 0.4, 0.02, 0.01], [0.30, 0.35, 0.26, 0.26], 4),  # learned a little, then collapsed
        ([0.5, 0.05, 0.6, 0.05, 0.04], [0.25, 0.25, 0.40, 0.25, 0.25], 5),  # one collapsed epoch is not enough
    ],
)
def test_the_collapse_rule_fires_after_two_collapsed_epochs_in_a_row(spreads, accs, epoch):
    warning = health.collapse_warning(rows(spreads, accs), 0.26, 1000)
    assert warning["kind"] == "collapse" and warning["epoch"] == epoch
    assert "nontarget" in warning["message"] and "26.0%" in warning["message"] and "spread" in warning["message"]


@pytest.mark.parametrize(
    ("method", "scaling", "says", "never"),
    [
        ("tss-kd", "paper", "--kd-scaling nontarget", "classes differ"),
        ("tss-kd", "nontarget", "a smaller KD weight or a longer KD warm-up", "--kd-scaling"),  # already stable
        ("kd", None, "a smaller KD weight", "--kd-scaling"),
        ("ce", None, "classes differ in what the images show", "KD"),  # no KD term to blame
    ],
)
def test_the_collapse_advice_fits_the_runs_settings(method, scaling, says, never):
    from core import config

    advice = health.collapse_advice(config.applies(method), scaling)
    warning = health.collapse_warning(rows([0.5, 0.05, 0.04], [0.26, 0.25, 0.26]), 0.26, 1000, advice=advice)
    assert says in warning["message"] and never not in warning["message"]


def test_one_answer_for_everything_is_a_collapse_however_the_logits_vary():
    warning = health.collapse_warning(rows([1.5, 1.0, 0.9], [0.25, 0.26, 0.25], [0.69, 1.0, 0.95]), 0.26, 1000)
    assert warning["epoch"] == 3 and "95% of the validation images the same class" in warning["message"]


def test_the_paper_arms_measured_on_an_h100_are_flagged_and_the_stable_ones_are_not():
    """The per-epoch figures of bench/methods.py's GPU run (committed): the rule fires on every run of the
    paper's scaling and on none of CE, KD and the stable TSS-KD."""
    import json
    from pathlib import Path

    result = json.loads((Path(__file__).resolve().parents[1] / "bench/results/methods-gpu-synthetic.json").read_text())
    for run in result["runs"]:
        warning = health.collapse_warning(run["curve"], 0.258, 1000)  # the val split: 1,000 images, 25.8% majority
        assert (warning is not None) == run["arm"].startswith("tss-kd/paper"), (run["arm"], run["seed"], warning)


@pytest.mark.parametrize(
    ("spreads", "accs"),
    [
        ([0.3, 0.35, 0.5, 0.9], [0.26, 0.25, 0.27, 0.26]),  # near chance early on, but the output still varies
        ([0.5, 0.05, 0.04], [0.6, 0.7, 0.8]),  # confident and right: a small spread is not a collapse
        ([0.5, 0.05, 0.5, 0.05], [0.25, 0.25, 0.25, 0.25]),  # never two epochs in a row
        ([0.5], [0.25]),
        ([], []),
    ],
)
def test_the_collapse_rule_stays_quiet_on_healthy_runs(spreads, accs):
    assert health.collapse_warning(rows(spreads, accs), 0.26, 1000) is None


def test_rows_recorded_before_the_spread_existed_are_not_judged():
    assert health.collapse_warning([{"epoch": 1, "val_acc": 0.25}, {"epoch": 2, "val_acc": 0.25}], 0.26, 1000) is None


@pytest.mark.parametrize(
    ("accuracy", "n", "flagged"),
    [(0.25, 1000, True), (0.285, 1000, True), (0.29, 1000, False), (0.9, 1000, False), (0.33, 100, True)],
)
def test_the_chance_check_flags_accuracy_within_two_standard_errors_of_the_majority_rate(accuracy, n, flagged):
    # two standard errors at 26% are 2.8 points on 1,000 images and 8.8 on 100
    warning = health.chance_warning(accuracy, 0.26, n, epoch=6)
    assert (warning is not None) == flagged
    if flagged:
        assert warning["kind"] == "chance" and warning["epoch"] == 6


def test_a_flagged_run_keeps_training_and_says_so(tmp_path, monkeypatch):
    """The trainer's side: a collapse found after an epoch goes to status.json and the log once, and the
    run goes on to the end unless --stop-on-collapse."""
    import json

    from conftest import tiny_config

    from core.train import run_training

    fake = {"kind": "collapse", "epoch": 1, "message": "the model collapsed to a near-constant output"}
    monkeypatch.setattr(health, "collapse_warning", lambda rows, majority, n, advice: {**fake, "epoch": len(rows)})
    run = run_training(tiny_config(tmp_path, epochs=2))
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "done"
    assert [w for w in status["warnings"] if w["kind"] == "collapse"] == [fake]  # the first epoch's, once
    assert (run / "train.log").read_text().count("collapsed to a near-constant output") == 1


def test_stop_on_collapse_ends_the_run_as_failed_with_the_reason(tmp_path, monkeypatch, capsys):
    import json
    from pathlib import Path

    from core.train import main

    fake = {"kind": "collapse", "epoch": 1, "message": "the model collapsed to a near-constant output"}
    monkeypatch.setattr(health, "collapse_warning", lambda rows, majority, n, advice: fake)
    argv = ["--image-size", "16", "--synthetic-train", "32", "--synthetic-val", "16", "--synthetic-test", "16"]
    argv += ["--epochs", "3", "--batch-size", "16", "--device", "cpu", "--runs-dir", str(tmp_path / "runs")]
    assert main([*argv, "--stop-on-collapse"]) == 2
    assert "stopped on collapse at epoch 1" in capsys.readouterr().err
    [run] = list(Path(tmp_path / "runs").iterdir())
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "stopped on collapse at epoch 1" in status["error"]
    assert status["warnings"] == [fake] and len((run / "metrics.jsonl").read_text().splitlines()) == 1


SUMS = {"loss": 1.2, "ce": 1.0, "kd": 0.2}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("key", ["loss", "ce", "kd"])
def test_a_loss_that_is_not_a_number_is_a_divergence_naming_what_to_lower(key, bad):
    model = torch.nn.Linear(3, 2)
    health.check_finite(SUMS, model, epoch=4, lr=0.1, kd_weight=2.0)  # finite: nothing to say
    with pytest.raises(health.Diverged) as e:
        health.check_finite({**SUMS, key: bad}, model, epoch=4, lr=0.1, kd_weight=2.0)
    assert str(e.value) == (
        f"the training diverged in epoch 4: its loss became {bad}. Start again with a lower learning rate (0.1) "
        "or KD weight (2)."
    )


@pytest.mark.parametrize("where", ["weight", "running_var"])
def test_weights_or_batch_statistics_that_are_not_finite_are_a_divergence(where):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    health.check_finite(SUMS, model, epoch=1, lr=0.1, kd_weight=None)
    with torch.no_grad():
        (model[0].weight if where == "weight" else model[1].running_var)[0] = float("inf")
    with pytest.raises(
        health.Diverged, match=r"epoch 1: its weights are no longer finite numbers\. .*rate \(0\.1\)\.$"
    ):
        health.check_finite(SUMS, model, epoch=1, lr=0.1, kd_weight=None)


def test_finite_weights_whose_outputs_overflow_fail_validation_as_a_divergence():
    from conftest import tiny_config

    from core import engine
    from core.data import load_dataset
    from core.model import ModelSpec, build_model

    cfg = tiny_config(Path("unused")).resolved()
    data = load_dataset(cfg.data)
    model = build_model(ModelSpec(classes=data.classes, image_size=cfg.data.image_size))
    engine.validate(model, data, cfg, None)  # a fresh model's outputs are finite
    with torch.no_grad():
        model.projector[-1].weight.fill_(3e38)  # finite, but its logits overflow
    assert health.finite_model(model)
    with pytest.raises(health.Diverged, match="its outputs on the validation images are no longer finite numbers"):
        engine.validate(model, data, cfg, None)
