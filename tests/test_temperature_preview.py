"""The numbers behind the Temperatures and Augment tabs, against independent computations."""

import numpy as np
import pytest
import torch

from core.errors import StudioError
from core.imageio import Scan
from core.losses import KD_SCALINGS, kd_curvature, kd_loss, tss_kd_loss
from core.preview import rga_explicit, rga_samples, training_views
from core.temperature import temperature_view


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.mark.parametrize("temps", [(4.0, 0.4), (2.0, 2.0), (1.0, 5.0)])
@pytest.mark.parametrize("target", [0, 2])
@pytest.mark.parametrize("scaling", KD_SCALINGS)
def test_temperature_view_matches_the_training_loss(temps, target, scaling):
    g = np.random.default_rng(target)
    z, zt = g.normal(0, 2, 5), g.normal(0, 2, 5)
    v = temperature_view(
        z.tolist(), zt.tolist(), target, t_target=temps[0], t_nontarget=temps[1], kd_weight=0.5, scaling=scaling
    )
    tau = np.full(5, temps[1])
    tau[target] = temps[0]
    q, p = softmax(zt / tau), softmax(z / tau)
    scale = temps[0] ** 2 if scaling == "paper" else temps[1] ** 2
    want = scale * float(np.sum(q * (np.log(q) - np.log(p))))  # float64, from the formula
    assert v["curvature_s"] == pytest.approx(kd_curvature(*temps, kd_weight=0.5, scaling=scaling))
    assert v["tss_kd"] == pytest.approx(want, rel=1e-10)  # the training loss, run in float64
    assert v["tss_target_part"] + v["tss_nontarget_part"] == pytest.approx(v["tss_kd"], rel=1e-10)
    assert v["tss_kd"] == pytest.approx(
        float(
            tss_kd_loss(
                torch.tensor(z)[None].float(),
                torch.tensor(zt)[None].float(),
                torch.tensor([target]),
                t_target=temps[0],
                t_nontarget=temps[1],
                scaling=scaling,
            )
        ),
        rel=1e-4,
    )  # and what a float32 training step computes
    assert v["kd_single_temperature"] == pytest.approx(
        float(kd_loss(torch.tensor(z)[None], torch.tensor(zt)[None], temperature=temps[0])), rel=1e-5
    )
    np.testing.assert_allclose(v["teacher_tss"], softmax(zt / tau), rtol=1e-12)
    np.testing.assert_allclose(v["teacher_kd"], softmax(zt / temps[0]), rtol=1e-12)
    assert v["ce"] == pytest.approx(-np.log(softmax(z)[target]))
    assert v["total"] == pytest.approx(v["ce"] + 0.5 * v["tss_kd"])


def test_the_preview_defaults_to_the_studios_scaling_and_shows_the_papers_curvature():
    z, zt = [2.0, 0.5, -1.0, 0.3], [1.5, 0.8, -0.5, 0.1]
    stable = temperature_view(z, zt, 0, t_target=4.0, t_nontarget=0.4)
    paper = temperature_view(z, zt, 0, t_target=4.0, t_nontarget=0.4, scaling="paper")
    assert stable["curvature_s"] == pytest.approx(1.0) and paper["curvature_s"] == pytest.approx(100.0)
    assert paper["tss_kd"] == pytest.approx(100 * stable["tss_kd"])


def test_the_temperatures_tab_warns_when_s_is_far_above_classic_kd():
    from ui.temperatures import curvature_note

    note, warning = curvature_note(100.0)
    assert "s = 100" in note and "Warning" in warning and "100 times" in warning
    assert curvature_note(1.0) == ("**s = 1** (classic KD: 1)", "")


def test_low_nontarget_temperature_sharpens_the_wrong_classes():
    v = temperature_view([0, 0, 0, 0], [3.0, 1.0, 0.5, -1.0], 0, t_target=4, t_nontarget=0.4)
    nontarget_kd = np.array(v["teacher_kd"][1:]) / sum(v["teacher_kd"][1:])
    nontarget_tss = np.array(v["teacher_tss"][1:]) / sum(v["teacher_tss"][1:])
    assert nontarget_tss[0] > nontarget_kd[0]  # the most plausible mistake stands out more


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(student=[1.0], teacher=[1.0], target=0), "at least two"),
        (dict(student=[1.0, 2.0], teacher=[1.0], target=0), "same number"),
        (dict(student=[1.0, 2.0], teacher=[1.0, 2.0], target=3), "target class"),
        (dict(student=[1.0, float("nan")], teacher=[1.0, 2.0], target=0), "finite"),
    ],
)
def test_temperature_view_rejects_bad_input(kwargs, message):
    with pytest.raises(StudioError, match=message):
        temperature_view(kwargs["student"], kwargs["teacher"], kwargs["target"], t_target=4, t_nontarget=0.4)


SCAN = Scan(np.tile(np.linspace(10, 250, 40, dtype=np.uint8), (30, 1)))


def test_rga_samples_apply_exactly_their_captions():
    samples = rga_samples(SCAN, count=5, seed=3)
    assert len(samples) == 5
    again = rga_samples(SCAN, count=5, seed=3)
    for (img, caption), (img2, caption2) in zip(samples, again, strict=True):
        assert caption == caption2 and np.array_equal(img, img2)
        gamma = float(caption.split(",")[0].split()[1])
        y0, x0, y1, x1 = (int(v) for v in caption.split("box (")[1].rstrip(")").split(","))
        want = SCAN.pixels.astype(np.float64) / 255
        want[y0:y1, x0:x1] **= gamma
        assert np.abs(img.astype(float) - np.round(want * 255)).max() <= 1  # gamma printed to 3 decimals


def test_explicit_rga_and_training_views():
    img, caption = rga_explicit(SCAN, gamma=2.0, box=(0.0, 0.5, 1.0, 1.0))
    assert caption == "gamma 2.000, box (0, 20, 30, 40)"
    assert np.array_equal(img[:, :20], SCAN.pixels[:, :20]) and (img[:, 20:] <= SCAN.pixels[:, 20:]).all()
    views = training_views(SCAN, size=24, seed=1)
    assert [v[0].shape for v in views] == [(24, 24), (24, 24)]
    again = training_views(SCAN, size=24, seed=1)
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(views, again, strict=True))
    assert views[0][1].startswith("view 1 (teacher): crop") and "gamma" in views[1][1]
    with pytest.raises(StudioError):
        rga_explicit(SCAN, gamma=2.0, box=(0.6, 0.0, 0.5, 1.0))
