"""Lesion-map scores: a perfect map scores 1, a uniform map scores the lesion's area share."""

import numpy as np
import pytest

from core.errors import StudioError
from core.localization import energy_share, pointing_game, resize_map

MASK = np.zeros((20, 30), bool)
MASK[4:9, 10:16] = True  # 30 of 600 pixels


def test_perfect_map_scores_one():
    assert pointing_game(MASK.astype(float), MASK) == 1.0
    assert energy_share(MASK * 0.7, MASK) == pytest.approx(1.0)


def test_uniform_map_scores_the_lesion_area_share():
    uniform = np.ones(MASK.shape)
    assert energy_share(uniform, MASK) == pytest.approx(30 / 600)
    assert pointing_game(uniform, MASK) == pytest.approx(30 / 600)  # all tie: a random pick lands inside 5%


def test_map_pointing_elsewhere_scores_zero():
    away = np.zeros(MASK.shape)
    away[15, 2] = 1.0
    assert pointing_game(away, MASK) == 0.0 and energy_share(away, MASK) == 0.0
    half = np.zeros(MASK.shape)
    half[15, 2], half[5, 12] = 1.0, 3.0
    assert pointing_game(half, MASK) == 1.0 and energy_share(half, MASK) == pytest.approx(0.75)


def test_empty_map_and_bad_shapes():
    assert pointing_game(np.zeros(MASK.shape), MASK) == 0.0
    assert energy_share(np.zeros(MASK.shape), MASK) == 0.0
    with pytest.raises(StudioError, match="same size"):
        energy_share(np.ones((5, 5)), MASK)
    with pytest.raises(StudioError, match="no lesion"):
        pointing_game(np.ones(MASK.shape), np.zeros(MASK.shape, bool))


def test_resize_map_keeps_the_peak_region():
    small = np.zeros((4, 4), np.float32)
    small[1, 2] = 1.0
    big = resize_map(small, (16, 16))
    assert big.shape == (16, 16)
    y, x = np.unravel_index(np.argmax(big), big.shape)
    assert 4 <= y < 8 and 8 <= x < 12


def test_the_demo_models_maps_point_at_lesions_far_above_chance():
    import torch

    from core.localization import score_maps
    from core.model import load_model
    from core.synthetic import render

    model, spec, _ = load_model("assets/demo-model.safetensors")
    images, labels, masks = render(60, size=spec.image_size, seed=777)  # masks drawn apart from any training
    keep = torch.nonzero(labels != 0).flatten()[:20]
    scored = score_maps(model, images[keep], labels[keep], masks[keep].numpy(), method="gradcam++")
    chance = float(masks[keep].float().mean())  # what a uniform map scores on both
    assert scored["images"] == 20 and chance < 0.1
    assert scored["pointing_game"] > 3 * chance and scored["energy_share"] > 1.5 * chance
    with pytest.raises(StudioError, match="no scans"):
        score_maps(model, images[:0], labels[:0], masks[:0].numpy())


@pytest.mark.slow
def test_the_lesion_map_benchmark_times_scorecam_against_the_packages_float32(tmp_path):
    """bench/lesion_maps.py maps the same scans with ScoreCAM twice, in the studio's precision and in float32
    as the grad-cam package runs it, and says how far apart the two are."""
    import json

    import torch

    from bench import lesion_maps
    from core.device import amp_dtype

    out = tmp_path / "maps.json"
    argv = ["--images", "3", "--scorecam-images", "1", "--methods", "gradcam,scorecam", "--out", str(out)]
    assert lesion_maps.main(argv) == 0
    result = json.loads(out.read_text())
    assert {"gradcam", "scorecam", "scorecam, float32 (baseline)", "uniform map (baseline)"} <= set(result["results"])
    scorecam = result["scorecam_precision"]
    here = amp_dtype(torch.device("cpu")) or torch.float32
    assert scorecam["images"] == 1 and scorecam["studio_precision"] == str(here).removeprefix("torch.")
    for arm in ("studio", "float32"):
        assert scorecam[arm]["seconds_per_image"] > 0 and 0 <= scorecam[arm]["energy_share"] <= 1
    assert scorecam["speed_up"] == pytest.approx(
        scorecam["float32"]["seconds_per_image"] / scorecam["studio"]["seconds_per_image"]
    )
    assert scorecam["max_abs_difference"] < 0.05 and scorecam["same_lesion_box"] in (0.0, 1.0)
    if here == torch.float32:  # no bf16 here: the two are the same computation
        assert scorecam["max_abs_difference"] == 0 and scorecam["same_lesion_box"] == 1
