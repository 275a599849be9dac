"""Losses against float64 references written here from the formulas, not from core.losses."""

import math

import numpy as np
import pytest
import torch

from core.losses import METHODS, compute_loss, kd_loss, ps_kd_alpha, soft_cross_entropy, tss_kd_loss


def ref_softmax(z):
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def ref_tss_kd(z, zt, y, t_target, t_nontarget):
    """Loop over rows and classes in float64: T_t^2 * mean_b sum_c q log(q / p)."""
    total = 0.0
    for b in range(z.shape[0]):
        tau = np.array([t_target if c == y[b] else t_nontarget for c in range(z.shape[1])], dtype=np.float64)
        p = ref_softmax(z[b] / tau)
        q = ref_softmax(zt[b] / tau)
        total += sum(q[c] * (math.log(q[c]) - math.log(p[c])) for c in range(z.shape[1]) if q[c] > 0)
    return t_target**2 * total / z.shape[0]


def ref_ce(z, y):
    return float(np.mean([-math.log(ref_softmax(z[b])[y[b]]) for b in range(len(y))]))


def draw(seed, b=8, c=5, scale=3.0):
    g = np.random.default_rng(seed)
    return g.normal(0, scale, (b, c)), g.normal(0, scale, (b, c)), g.integers(0, c, b)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("temps", [(4.0, 0.4), (2.0, 1.0), (1.0, 3.0), (4.0, 4.0)])
def test_tss_kd_matches_float64_reference(seed, temps):
    z, zt, y = draw(seed)
    got = tss_kd_loss(
        torch.tensor(z, dtype=torch.float32),
        torch.tensor(zt, dtype=torch.float32),
        torch.tensor(y),
        t_target=temps[0],
        t_nontarget=temps[1],
    )
    want = ref_tss_kd(z, zt, y, *temps)
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
def test_compute_loss_matches_reference_for_every_method(method):
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
    )
    ce = ref_ce(z, y)
    if method == "ce":
        want = ce
    elif method in ("kd", "cs-kd"):
        want = ce + w * ref_tss_kd(z, zt, y, 3.0, 3.0)
    elif method == "tss-kd":
        want = ce + w * ref_tss_kd(z, zt, y, 3.0, 0.5)
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
