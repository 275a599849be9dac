"""The distillation terms the methods (core.methods) are made of: classic KD, TSS-KD, the soft
cross-entropy of PS-KD, and the factors around them.

Teacher logits never receive a gradient. Arithmetic is done in float32 at least, whatever the autocast
dtype of the logits, and in float64 for float64 logits (the Temperatures tab computes the real loss so).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.errors import StudioError

KD_SCALINGS = ("nontarget", "paper")


def wide(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32, or float64 if it is float64: the precision every loss is computed in."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def softened_kl_terms(student_logits, teacher_logits, tau, *, scale: float) -> torch.Tensor:
    """``scale * q * (log q - log p)`` per sample and class (B, C), with ``q = softmax(z_t / tau)`` and
    ``p = softmax(z / tau)``; summed and divided by B it is the softened KL. The teacher is detached."""
    z, zt = wide(student_logits), wide(teacher_logits.detach())
    log_p = F.log_softmax(z / tau, dim=1)
    q = F.softmax(zt / tau, dim=1)
    return scale * F.kl_div(log_p, q, reduction="none")


def _softened_kl(student_logits, teacher_logits, tau, *, scale: float) -> torch.Tensor:
    """scale * mean_b KL(softmax(z_t / tau) || softmax(z / tau))."""
    return softened_kl_terms(student_logits, teacher_logits, tau, scale=scale).sum() / len(student_logits)


def kd_scale(t_target: float, t_nontarget: float, scaling: str = "paper") -> float:
    """The factor in front of the softened KL: ``t_target**2`` (``paper``, as published and in the public
    code) or ``t_nontarget**2`` (``nontarget``: Hinton's T-squared rule applied to the temperature that
    sets the curvature on the non-target logits). The two agree when the temperatures are equal."""
    if scaling not in KD_SCALINGS:
        raise StudioError(f"unknown KD scaling '{scaling}'; choose one of {', '.join(KD_SCALINGS)}.")
    return t_target**2 if scaling == "paper" else t_nontarget**2


def kd_curvature(t_target: float, t_nontarget: float, *, kd_weight: float = 1.0, scaling: str = "paper") -> float:
    """``s``: the distillation term's curvature on the non-target logits relative to classic KD's,
    ``kd_weight * scale / t_nontarget**2``. Classic KD at any temperature has s = 1. The paper's settings
    (4 / 0.4, weight 1, paper scaling) give s = 100, which a network trained from scratch satisfies with a
    constant output (measured; see README, "Results")."""
    return kd_weight * kd_scale(t_target, t_nontarget, scaling) / t_nontarget**2


def tss_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    t_target: float = 4.0,
    t_nontarget: float = 0.4,
    scaling: str = "paper",
) -> torch.Tensor:
    """Temperature-scaling self-KD term (Liu et al., Neurocomputing 638, 2025, 130115).

    The target class of each row is softened with `t_target` and every other class with `t_nontarget`:
    ``tau[b, c] = t_target if c == y[b] else t_nontarget``; ``p = log_softmax(z / tau)``,
    ``q = softmax(z_t / tau)``; returns ``t_target**2 * mean_b KL(q_b || p_b)`` (``scaling="paper"``)
    or ``t_nontarget**2 * mean_b KL(q_b || p_b)`` (``scaling="nontarget"``, see `kd_scale`). With
    ``t_nontarget == t_target`` this is classic KD at that temperature.

    Args:
        student_logits: (B, C); gradient flows.
        teacher_logits: (B, C); detached here.
        targets: (B,) class indices.
    Returns:
        A scalar tensor (float32).
    """
    tau = tss_temperatures(student_logits, targets, t_target, t_nontarget)
    return _softened_kl(student_logits, teacher_logits, tau, scale=kd_scale(t_target, t_nontarget, scaling))


def tss_temperatures(logits: torch.Tensor, targets: torch.Tensor, t_target: float, t_nontarget: float) -> torch.Tensor:
    """TSS-KD's temperature per sample and class (B, C): `t_target` at each row's target, else `t_nontarget`."""
    tau = torch.full_like(wide(logits), t_nontarget)
    return tau.scatter_(1, targets.view(-1, 1), t_target)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 4.0) -> torch.Tensor:
    """Classic knowledge distillation term (Hinton, Vinyals, Dean, arXiv:1503.02531, 2015):
    ``T**2 * mean_b KL(softmax(z_t / T) || softmax(z / T))``."""
    return _softened_kl(student_logits, teacher_logits, temperature, scale=temperature**2)


def soft_cross_entropy(student_logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """``mean_b sum_c -q[b, c] log softmax(z)[b, c]`` for a soft target distribution `q` (detached)."""
    return -(wide(target_probs.detach()) * F.log_softmax(wide(student_logits), dim=1)).sum(1).mean()


def ps_kd_alpha(epoch: int, epochs: int, *, alpha_final: float = 0.8) -> float:
    """PS-KD's linearly growing trust in the past predictions: alpha_T * (t + 1) / T, 0 in the first epoch."""
    return 0.0 if epoch == 0 else alpha_final * (epoch + 1) / epochs


def kd_warmup_factor(epoch: int, warmup: int) -> float:
    """The share of the KD weight in (0-based) `epoch` under a linear warm-up over `warmup` epochs:
    1/warmup in the first epoch, 1 from epoch `warmup` - 1 on; always 1 without warm-up (DKD, Zhao et
    al., CVPR 2022, warms its distillation term up the same way)."""
    return 1.0 if warmup <= 1 else min(1.0, (epoch + 1) / warmup)
