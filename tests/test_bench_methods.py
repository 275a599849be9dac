"""bench/methods.py: the statistics it reports, and one small end-to-end comparison."""

import json
import math

import numpy as np
import pytest
from helpers import write_medmnist
from scipy import stats

from bench import methods

pytestmark = pytest.mark.slow  # method comparisons: `make test-fast` leaves them out


def rows_for(method, rga, accs, *, maps=None):
    return [
        {"method": method, "rga": rga, "seed": s, "test_acc": a, "test_auc": a, "test_ece": 1 - a, **(maps or {})}
        for s, a in enumerate(accs)
    ]


def test_a_t_test_over_seeds_that_all_differ_by_the_same_amount_has_no_p_value():
    """Zero variance of the differences: the t statistic is undefined, not 'p = 0'."""
    same = methods.paired_test({0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.6})
    assert same["mean_diff"] == pytest.approx(0.1) and same["p_value"] is None
    assert methods.paired_test({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})["p_value"] == 1.0


def test_mcnemar_counts_discordant_images_and_matches_the_binomial_test():
    arm = np.array([1, 1, 1, 1, 1, 0, 0, 1, 1, 1], bool)
    base = np.array([0, 0, 0, 0, 1, 1, 0, 1, 0, 1], bool)
    test = methods.mcnemar(arm, base)
    assert (test["b"], test["c"]) == (5, 1)
    # exact two-sided: 2 * P(X <= 1), X ~ Bin(6, 1/2) = 2 * 7/64
    assert test["p_value"] == pytest.approx(14 / 64)
    assert methods.mcnemar(arm, arm)["p_value"] == 1.0


def test_holm_adjusts_step_down_and_keeps_the_order():
    adjusted = methods.holm([0.01, 0.04, 0.03, 0.5])
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_the_stratified_bootstrap_interval_covers_the_difference_and_is_reproducible():
    g = np.random.default_rng(0)
    pairs = [(g.random(400) < 0.8, g.random(400) < 0.6) for _ in range(2)]
    boot = methods.bootstrap_diff(pairs, resamples=2000)
    observed = np.mean([a.mean() - b.mean() for a, b in pairs])
    assert boot["mean_diff"] == pytest.approx(observed)
    low, high = boot["ci95"]
    assert low < observed < high and 0 < low  # 20 points apart on 800 images: clearly positive
    # the half-width of a 95% interval of a difference of two proportions over 800 paired images
    assert 0.02 < (high - low) / 2 < 0.08
    assert methods.bootstrap_diff(pairs, resamples=2000) == boot


def test_per_image_tests_pair_images_by_seed_and_are_holm_corrected_across_the_table():
    g = np.random.default_rng(1)
    truth = {s: g.random(200) for s in range(2)}

    def rows(arm, method, threshold):
        return [
            {**r, "arm": arm, "method": method, "correct": (truth[r["seed"]] < threshold).astype(int).tolist()}
            for r in rows_for(method, True, [threshold, threshold])
        ]

    summary = methods.summarize(rows("ce", "ce", 0.5) + rows("kd", "kd", 0.9) + rows("tss-kd", "tss-kd", 0.55))
    by_arm = {r["arm"]: r for r in summary}
    kd = by_arm["kd"]["per_image_vs_baseline"]
    assert kd["images"] == 400 and set(kd["mcnemar_per_seed"]) == {"0", "1"}
    assert kd["mcnemar"]["c"] == 0 and kd["mcnemar"]["b"] == sum(t["b"] for t in kd["mcnemar_per_seed"].values())
    tss = by_arm["tss-kd"]["per_image_vs_baseline"]
    raw = [kd["mcnemar"]["p_value"], tss["mcnemar"]["p_value"]]
    assert [kd["mcnemar"]["p_holm"], tss["mcnemar"]["p_holm"]] == pytest.approx(methods.holm(raw))
    assert "per_image_vs_baseline" not in by_arm["ce"]


def test_summary_gives_mean_std_and_a_paired_test_against_ce():
    rows = rows_for("ce", False, [0.5, 0.6, 0.7]) + rows_for("tss-kd", False, [0.6, 0.65, 0.9])
    summary = {(r["method"], r["rga"]): r for r in methods.summarize(rows)}
    tss = summary[("tss-kd", False)]
    assert tss["test_acc"]["mean"] == pytest.approx(0.7166666, abs=1e-6)
    assert tss["test_acc"]["std"] == pytest.approx(0.1607275, abs=1e-6)
    diffs = [0.1, 0.05, 0.2]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    t = mean / (sd / math.sqrt(3))
    test = tss["test_acc_vs_baseline"]
    assert test["mean_diff"] == pytest.approx(mean)
    assert test["p_value"] == pytest.approx(2 * stats.t.sf(t, df=2), rel=1e-6)
    assert test["pairs"] == 3
    assert "test_acc_vs_baseline" not in summary[("ce", False)]  # plain CE is the baseline itself


def test_pairs_follow_seeds_not_order_and_missing_seeds_drop_out():
    ce = rows_for("ce", True, [0.5, 0.6, 0.7])
    kd = rows_for("kd", True, [0.8, 0.7])[::-1]  # seeds 1, 0 only, listed out of order
    test = {(r["method"], r["rga"]): r for r in methods.summarize(ce + kd)}[("kd", True)]["test_acc_vs_baseline"]
    assert test["pairs"] == 2
    assert test["mean_diff"] == pytest.approx(((0.8 - 0.5) + (0.7 - 0.6)) / 2)


@pytest.mark.parametrize(
    ("method", "rga", "expected"),
    [
        ("ce", False, None),
        ("ce", True, ("ce", False)),
        ("tss-kd", True, ("ce", True)),
        ("kd", False, ("ce", False)),
        ("tss-kd/bf16", True, ("tss-kd/float32", True)),
        ("ce/bf16", False, ("ce/float32", False)),
        ("tss-kd/float32", False, ("ce", False)),
    ],
)
def test_baselines(method, rga, expected):
    assert methods.baseline_of(method, rga) == expected


def test_lesion_map_scores_are_averaged_per_cam_method():
    maps = [{"gradcam": {"pointing_game": p, "energy_share": p / 2}} for p in (0.2, 0.4, 0.6)]
    rows = [{**r, "lesion_maps": m} for r, m in zip(rows_for("ce", False, [0.5, 0.5, 0.5]), maps, strict=True)]
    [row] = methods.summarize(rows)
    assert row["lesion_maps"]["gradcam"]["pointing_game"]["mean"] == pytest.approx(0.4)
    assert row["lesion_maps"]["gradcam"]["energy_share"]["mean"] == pytest.approx(0.2)
    assert row["test_acc"]["std"] == 0.0


@pytest.mark.slow
def test_a_small_comparison_end_to_end(tmp_path):
    stem = tmp_path / "cmp"
    argv = ["--arms", "ce,tss-kd/paper", "--seeds", "0,1", "--epochs", "1", "--image-size", "16", "--train", "64"]
    argv += ["--val", "32"]
    argv += ["--test", "48", "--cams", "gradcam,scorecam", "--cam-images", "3", "--scorecam-images", "1"]
    assert methods.main([*argv, "--device", "cpu", "--out", str(stem)]) == 0
    result = json.loads(stem.with_suffix(".json").read_text())
    assert len(result["runs"]) == 8
    keys = {(r["arm"], r["rga"]) for r in result["summary"]}
    assert keys == {("ce", False), ("ce", True), ("tss-kd/paper", False), ("tss-kd/paper", True)}
    tss = next(r for r in result["summary"] if r["arm"] == "tss-kd/paper" and r["rga"])
    assert tss["baseline"] == {"method": "ce", "rga": True} and tss["seeds"] == [0, 1]
    assert tss["test_acc_vs_baseline"]["pairs"] == 2
    assert tss["per_image_vs_baseline"]["images"] == 96 and 0 <= tss["per_image_vs_baseline"]["mcnemar"]["p_holm"] <= 1
    assert result["header"]["arms"]["tss-kd/paper"] == {"method": "tss-kd", "kd_scaling": "paper", "kd_warmup": 0}
    for run in result["runs"]:
        assert 0 <= run["test_acc"] <= 1 and 0 <= run["test_ece"] <= 1
        assert len(run["correct"]) == 48 and sum(run["correct"]) == round(run["test_acc"] * 48)
        assert run["lesion_maps"]["gradcam"]["images"] == 3 and run["lesion_maps"]["scorecam"]["images"] == 1
        assert 0 <= run["lesion_maps"]["gradcam"]["energy_share"] <= 1
    assert 0 < result["header"]["uniform_energy_share"] < 0.5
    table = stem.with_suffix(".md").read_text()
    assert "| tss-kd/paper (vs ce + RGA) | yes |" in table and "| ce (vs ce without RGA) | yes |" in table
    assert "gradcam | scorecam" in table
    assert stem.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    # a GPU machine's result, cut short after its first runs, summarized again here
    partial = tmp_path / "gpu.partial.json"
    partial.write_text(json.dumps({"partial": True, "runs": result["runs"][:4]}))
    assert methods.main(["--from-json", str(partial)]) == 0
    again = json.loads((tmp_path / "gpu.json").read_text())
    assert again["partial"] is True and len(again["runs"]) == 4 and again["summary"]
    assert "| tss-kd/paper (vs ce + RGA) | yes |" in (tmp_path / "gpu.md").read_text()


def test_the_quick_budget_is_the_studios_quick_preset_and_precision_arms_are_not_run_by_default():
    from core.config import QUICK

    quick = methods.BUDGETS["quick"]
    assert (quick["epochs"], quick["batch_size"], quick["image_size"], quick["train"]) == (
        QUICK["epochs"],
        QUICK["batch_size"],
        QUICK["image_size"],
        QUICK["synthetic_train"],
    )
    assert quick["settings"] == {"kd_warmup": QUICK["kd_warmup"], "optimizer": QUICK["optimizer"], "lr": QUICK["lr"]}
    assert "tss-kd/bf16" in methods.ARMS and "tss-kd/bf16" not in methods.DEFAULT_ARMS
    assert {"ce", "tss-kd", "tss-kd/paper"} <= set(methods.DEFAULT_ARMS)
    # the quick preset's optimizer against the one it had: Adam tested against its SGD twin, not run by default
    assert methods.baseline_of("tss-kd/adam", True) == ("tss-kd/sgd", True)
    assert (methods.ARMS["tss-kd/adam"]["optimizer"], methods.ARMS["tss-kd/sgd"]["optimizer"]) == ("adam", "sgd")
    assert not {"tss-kd/adam", "tss-kd/sgd"} & set(methods.DEFAULT_ARMS)


@pytest.mark.slow
def test_precision_arms_train_in_their_precision_and_bf16_is_tested_against_float32(tmp_path):
    stem, kept = tmp_path / "cmp", tmp_path / "runs"
    argv = ["--budget", "quick", "--arms", "tss-kd/float32,tss-kd/bf16", "--rga", "on", "--seeds", "0"]
    argv += ["--epochs", "1", "--train", "64", "--val", "32", "--test", "32", "--image-size", "16", "--cams", ""]
    assert methods.main([*argv, "--device", "cpu", "--runs-dir", str(kept), "--out", str(stem)]) == 0
    result = json.loads(stem.with_suffix(".json").read_text())
    assert {r["arm"]: r["autocast"] for r in result["runs"]} == {"tss-kd/float32": None, "tss-kd/bf16": "bfloat16"}
    bf16 = next(r for r in result["summary"] if r["arm"] == "tss-kd/bf16")
    assert bf16["baseline"] == {"method": "tss-kd/float32", "rga": True}
    assert bf16["per_image_vs_baseline"]["images"] == 32
    assert result["header"]["budget_settings"] == {"kd_warmup": 0, "optimizer": "adam", "lr": 0.001}
    configs = [json.loads(p.read_text()) for p in kept.glob("*/config.json")]
    assert len(configs) == 2 and all(c["kd_warmup"] == 0 and c["batch_size"] == 32 for c in configs)
    assert {(c["optimizer"], c["lr"]) for c in configs} == {("adam", 0.001)}  # the quick preset's
    assert {c["amp"] for c in configs} == {"off", "bf16"}
    assert "| tss-kd/bf16 (vs tss-kd/float32 + RGA) | yes |" in stem.with_suffix(".md").read_text()


@pytest.mark.slow
def test_a_comparison_on_a_medmnist_file_has_no_lesion_maps(tmp_path):
    data = write_medmnist(tmp_path / "tiny.npz", n=(48, 24, 24))
    stem = tmp_path / "cmp"
    argv = ["--dataset", "medmnist", "--data-path", str(data), "--arms", "ce,kd", "--rga", "off"]
    assert methods.main([*argv, "--seeds", "3,4", "--epochs", "1", "--device", "cpu", "--out", str(stem)]) == 0
    result = json.loads(stem.with_suffix(".json").read_text())
    assert result["header"]["data_path"] == "tiny.npz" and result["header"]["train_images"] == 48
    assert [(r["method"], r["seed"]) for r in result["runs"]] == [("ce", 3), ("kd", 3), ("ce", 4), ("kd", 4)]
    assert all("lesion_maps" not in r for r in result["runs"])  # MedMNIST has no lesion masks
    assert "Lesion maps" not in stem.with_suffix(".md").read_text()


def test_a_missing_data_file_is_refused_before_any_run(tmp_path):
    stem = tmp_path / "cmp"
    with pytest.raises(SystemExit, match="no such|not found|does not exist"):
        methods.main(["--dataset", "medmnist", "--data-path", str(tmp_path / "absent.npz"), "--out", str(stem)])
    assert not list(tmp_path.iterdir())
