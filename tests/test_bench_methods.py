"""bench/methods.py: the statistics it reports, and one small end-to-end comparison."""

import json
import math

import pytest
from helpers import write_medmnist
from scipy import stats

from bench import methods


def rows_for(method, rga, accs, *, maps=None):
    return [
        {"method": method, "rga": rga, "seed": s, "test_acc": a, "test_auc": a, "test_ece": 1 - a, **(maps or {})}
        for s, a in enumerate(accs)
    ]


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
    [("ce", False, None), ("ce", True, ("ce", False)), ("tss-kd", True, ("ce", True)), ("kd", False, ("ce", False))],
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
    argv = ["--methods", "ce,tss-kd", "--seeds", "0,1", "--epochs", "1", "--train", "64", "--val", "32"]
    argv += ["--test", "48", "--cams", "gradcam,scorecam", "--cam-images", "3", "--scorecam-images", "1"]
    assert methods.main([*argv, "--device", "cpu", "--out", str(stem)]) == 0
    result = json.loads(stem.with_suffix(".json").read_text())
    assert len(result["runs"]) == 8
    keys = {(r["method"], r["rga"]) for r in result["summary"]}
    assert keys == {("ce", False), ("ce", True), ("tss-kd", False), ("tss-kd", True)}
    tss = next(r for r in result["summary"] if r["method"] == "tss-kd" and r["rga"])
    assert tss["baseline"] == {"method": "ce", "rga": True} and tss["seeds"] == [0, 1]
    assert tss["test_acc_vs_baseline"]["pairs"] == 2
    for run in result["runs"]:
        assert 0 <= run["test_acc"] <= 1 and 0 <= run["test_ece"] <= 1
        assert run["lesion_maps"]["gradcam"]["images"] == 3 and run["lesion_maps"]["scorecam"]["images"] == 1
        assert 0 <= run["lesion_maps"]["gradcam"]["energy_share"] <= 1
    assert 0 < result["header"]["uniform_energy_share"] < 0.5
    table = stem.with_suffix(".md").read_text()
    assert "| tss-kd (vs ce + RGA) | yes |" in table and "| ce (vs ce without RGA) | yes |" in table
    assert "gradcam | scorecam" in table
    assert stem.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_a_comparison_on_a_medmnist_file_has_no_lesion_maps(tmp_path):
    data = write_medmnist(tmp_path / "tiny.npz", n=(48, 24, 24))
    stem = tmp_path / "cmp"
    argv = ["--dataset", "medmnist", "--data-path", str(data), "--methods", "ce,kd", "--rga", "off"]
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
