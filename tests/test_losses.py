"""Losses against float64 references written here from the formulas, not from core.losses."""

import math

import numpy as np
import pytest
import torch

from core.errors import StudioError
from core.losses import (
    KD_SCALINGS,
    kd_curvature,
    kd_loss,
    kd_warmup_factor,
    ps_kd_alpha,
    soft_cross_entropy,
    tss_kd_loss,
)
from core.methods import METHODS, compute_loss


def ref_softmax(z):
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def ref_tss_kd(z, zt, y, t_target, t_nontarget, scaling="paper"):
    """Loop over rows and classes in float64: S * mean_b sum_c q log(q / p), with S = T_t^2 (paper) or
    t_n^2 (nontarget)."""
    total = 0.0
    for b in range(z.shape[0]):
        tau = np.array([t_target if c == y[b] else t_nontarget for c in range(z.shape[1])], dtype=np.float64)
        p = ref_softmax(z[b] / tau)
        q = ref_softmax(zt[b] / tau)
        total += sum(q[c] * (math.log(q[c]) - math.log(p[c])) for c in range(z.shape[1]) if q[c] > 0)
    scale = t_target**2 if scaling == "paper" else t_nontarget**2
    return scale * total / z.shape[0]


def ref_ce(z, y):
    return float(np.mean([-math.log(ref_softmax(z[b])[y[b]]) for b in range(len(y))]))


def draw(seed, b=8, c=5, scale=3.0):
    g = np.random.default_rng(seed)
    return g.normal(0, scale, (b, c)), g.normal(0, scale, (b, c)), g.integers(0, c, b)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("temps", [(4.0, 0.4), (2.0, 1.0), (1.0, 3.0), (4.0, 4.0)])
@pytest.mark.parametrize("scaling", KD_SCALINGS)
def test_tss_kd_matches_float64_reference(seed, temps, scaling):
    z, zt, y = draw(seed)
    got = tss_kd_loss(
        torch.tensor(z, dtype=torch.float32),
        torch.tensor(zt, dtype=torch.float32),
        torch.tensor(y),
        t_target=temps[0],
        t_nontarget=temps[1],
        scaling=scaling,
    )
    want = ref_tss_kd(z, zt, y, *temps, scaling=scaling)
    assert got.dim() == 0
    assert float(got) == pytest.approx(want, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("t", [0.5, 1.0, 4.0, 10.0])
def test_equal_temperatures_reduce_to_classic_kd(t):
    z, zt, y = draw(7)
    z, zt = torch.tensor(z), torch.tensor(zt)
    assert float(tss_kd_loss(z, zt, torch.tensor(y), t_target=t, t_nontarget=t)) == pytest.approx(
        float(kd_loss(z, zt, temperature=t)), rel=1e-6
    )
    # and classic KD itself against its formula
    q = torch.softmax(zt / t, 1)
    want = t**2 * float((q * (torch.log(q) - torch.log_softmax(z / t, 1))).sum(1).mean())
    assert float(kd_loss(z, zt, temperature=t)) == pytest.approx(want, rel=1e-5)


def test_the_default_scaling_of_the_loss_function_is_the_papers():
    """The contract of core.losses.tss_kd_loss (DESIGN.md): called without `scaling` it returns the paper's
    t_target**2 * KL; the nontarget scaling is exactly (t_nontarget / t_target)**2 of it."""
    z, zt, y = (torch.tensor(a) for a in draw(11))
    paper = tss_kd_loss(z, zt, y, t_target=4.0, t_nontarget=0.4)
    assert float(paper) == pytest.approx(ref_tss_kd(*draw(11), 4.0, 0.4), rel=1e-6)
    stable = tss_kd_loss(z, zt, y, t_target=4.0, t_nontarget=0.4, scaling="nontarget")
    assert float(stable) == pytest.approx(float(paper) * 0.01, rel=1e-6)


@pytest.mark.parametrize("t", [0.5, 4.0])
def test_both_scalings_are_classic_kd_when_the_temperatures_are_equal(t):
    z, zt, y = (torch.tensor(a) for a in draw(4))
    for scaling in KD_SCALINGS:
        got = tss_kd_loss(z, zt, y, t_target=t, t_nontarget=t, scaling=scaling)
        assert float(got) == pytest.approx(float(kd_loss(z, zt, temperature=t)), rel=1e-6)


@pytest.mark.parametrize(
    ("temps", "weight", "scaling", "s"),
    [
        ((4.0, 0.4), 1.0, "paper", 100.0),  # the paper's settings
        ((4.0, 0.4), 1.0, "nontarget", 1.0),  # the studio's default
        ((4.0, 0.4), 0.01, "paper", 1.0),
        ((4.0, 4.0), 1.0, "paper", 1.0),  # classic KD
        ((2.0, 0.5), 0.5, "paper", 8.0),
    ],
)
def test_curvature_relative_to_classic_kd(temps, weight, scaling, s):
    assert kd_curvature(*temps, kd_weight=weight, scaling=scaling) == pytest.approx(s)


def test_an_unknown_scaling_is_refused():
    z, zt, y = (torch.tensor(a) for a in draw(0))
    with pytest.raises(StudioError, match="unknown KD scaling 'hinton'"):
        tss_kd_loss(z, zt, y, scaling="hinton")


@pytest.mark.parametrize(
    ("warmup", "factors"),
    [
        (0, [1.0, 1.0, 1.0]),
        (1, [1.0, 1.0, 1.0]),
        (4, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]),
        (10, [0.1, 0.2, 0.3]),
    ],
)
def test_kd_warmup_grows_linearly_from_one_over_epochs_to_one(warmup, factors):
    assert [kd_warmup_factor(e, warmup) for e in range(len(factors))] == pytest.approx(factors)


def test_tss_kd_differs_from_kd_when_temperatures_differ():
    z, zt, y = draw(3)
    z, zt, y = torch.tensor(z), torch.tensor(zt), torch.tensor(y)
    assert abs(float(tss_kd_loss(z, zt, y)) - float(kd_loss(z, zt, temperature=4.0))) > 1e-3


def test_identical_logits_give_zero_distillation():
    z, _, y = draw(1)
    z = torch.tensor(z)
    assert float(tss_kd_loss(z, z.clone(), torch.tensor(y))) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("magnitude", [100.0, -100.0])
def test_losses_stay_finite_for_extreme_logits(method, magnitude):
    g = torch.Generator().manual_seed(0)
    z = magnitude * torch.sign(torch.randn(6, 4, generator=g))
    zt = -z.flip(0)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    past = torch.softmax(zt, 1)
    parts = compute_loss(method, z.requires_grad_(), y, teacher_logits=zt, past_probs=past, alpha=0.5)
    parts["loss"].backward()
    assert all(torch.isfinite(v) for v in parts.values())
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("method", ["kd", "cs-kd", "tss-kd"])
def test_no_gradient_reaches_teacher_logits(method):
    z, zt, y = draw(2)
    z = torch.tensor(z, requires_grad=True)
    zt = torch.tensor(zt, requires_grad=True)
    parts = compute_loss(method, z, torch.tensor(y), teacher_logits=zt)
    parts["loss"].backward()
    assert zt.grad is None
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("scaling", KD_SCALINGS)
def test_compute_loss_matches_reference_for_every_method(method, scaling):
    z, zt, y = draw(5)
    past = np.stack([ref_softmax(r) for r in zt])
    alpha, w = 0.3, 0.7
    parts = compute_loss(
        method,
        torch.tensor(z),
        torch.tensor(y),
        teacher_logits=torch.tensor(zt),
        past_probs=torch.tensor(past),
        t_target=3.0,
        t_nontarget=0.5,
        kd_weight=w,
        alpha=alpha,
        kd_scaling=scaling,
    )
    ce = ref_ce(z, y)
    if method == "ce":
        want = ce
    elif method in ("kd", "cs-kd"):
        want = ce + w * ref_tss_kd(z, zt, y, 3.0, 3.0)
    elif method == "tss-kd":
        want = ce + w * ref_tss_kd(z, zt, y, 3.0, 0.5, scaling)
    else:  # ps-kd: CE against (1 - a) * onehot + a * past
        onehot = np.eye(z.shape[1])[y]
        target = (1 - alpha) * onehot + alpha * past
        want = float(np.mean([-(target[b] * np.log(ref_softmax(z[b]))).sum() for b in range(len(y))]))
    assert float(parts["ce"]) == pytest.approx(ce, rel=1e-6)
    assert float(parts["loss"]) == pytest.approx(want, rel=1e-5)


def test_soft_cross_entropy_with_onehot_is_cross_entropy():
    z, _, y = draw(9)
    onehot = torch.nn.functional.one_hot(torch.tensor(y), 5).double()
    assert float(soft_cross_entropy(torch.tensor(z), onehot)) == pytest.approx(ref_ce(z, y), rel=1e-6)


def test_ps_kd_alpha_grows_linearly_to_its_final_value():
    assert ps_kd_alpha(0, 10) == 0.0
    assert ps_kd_alpha(4, 10) == pytest.approx(0.4)
    assert ps_kd_alpha(9, 10) == pytest.approx(0.8)


def test_every_method_cites_its_source():
    for m in METHODS.values():
        assert m.citation and m.teacher in ("none", "view", "class", "history")
    assert METHODS["tss-kd"].t_target == 4.0 and METHODS["tss-kd"].t_nontarget == 0.4


@pytest.mark.parametrize("method", list(METHODS))
def test_float64_logits_give_the_loss_in_float64(method):
    """The Temperatures tab runs the training loss itself in float64: no step may round to float32."""
    z, zt, y = draw(3)
    past = np.stack([ref_softmax(r) for r in zt])
    parts = compute_loss(
        method,
        torch.tensor(z, dtype=torch.float64),
        torch.tensor(y),
        teacher_logits=torch.tensor(zt, dtype=torch.float64),
        past_probs=torch.tensor(past),
        t_target=3.0,
        t_nontarget=0.5,
        alpha=0.3,
        kd_scaling="nontarget",
    )
    assert all(v.dtype == torch.float64 for v in parts.values())
    assert float(parts["ce"]) == pytest.approx(ref_ce(z, y), rel=1e-12)
    if method == "tss-kd":
        assert float(parts["kd"]) == pytest.approx(ref_tss_kd(z, zt, y, 3.0, 0.5, "nontarget"), rel=1e-12)


class Recorder:
    """Stands in for the network and the augmentation: records which images each view was drawn from."""

    def __init__(self):
        self.views, self.calls = [], []

    def view(self, images):
        self.views.append(images)
        return images.float()

    def net(self, x):
        self.calls.append(torch.is_grad_enabled())
        return x.mean(dim=(1, 2, 3))[:, None].repeat(1, 3)


@pytest.mark.parametrize(
    "method,views,teacher",
    [("ce", 1, False), ("ps-kd", 1, False), ("kd", 2, True), ("tss-kd", 2, True), ("cs-kd", 2, True)],
)
def test_each_method_draws_its_own_views_and_teacher(method, views, teacher):
    from core.methods import Batch

    rec = Recorder()
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    partners = images.flip(0)
    batch = Batch(images, rec.view, (lambda: partners) if method == "cs-kd" else None)
    z, t = METHODS[method].forward(rec.net, batch)
    assert len(rec.views) == views and (t is not None) == teacher
    assert z.shape == (2, 3)
    if teacher:
        assert rec.calls == [False, True]  # the teacher under no_grad, the student with gradient
        first = partners if method == "cs-kd" else images
        assert torch.equal(rec.views[0], first) and torch.equal(rec.views[1], images)


def test_each_method_uses_only_settings_the_config_knows():
    from core.config import METHOD_SETTINGS, applies

    for name, m in METHODS.items():
        assert set(m.uses) <= set(METHOD_SETTINGS) and applies(name) == m.uses
    assert applies("ce") == () and "t_nontarget" in applies("tss-kd") and "t_nontarget" not in applies("kd")
