"""Training objectives: cross-entropy and four self-distillation methods, each returning a dict of parts.

Every method returns ``{"loss", "ce", "kd"}`` (scalars): ``loss`` is what is minimised, ``ce`` the
cross-entropy with the hard labels and ``kd`` the distillation term before weighting. Teacher logits
never receive a gradient. All arithmetic is done in float32 whatever the autocast dtype of the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.errors import StudioError

KD_SCALINGS = ("nontarget", "paper")


def _softened_kl(student_logits, teacher_logits, tau, *, scale: float) -> torch.Tensor:
    """scale * mean_b KL(softmax(z_t / tau) || softmax(z / tau)) in float32; the teacher is detached."""
    log_p = F.log_softmax(student_logits.float() / tau, dim=1)
    q = F.softmax(teacher_logits.detach().float() / tau, dim=1)
    return scale * F.kl_div(log_p, q, reduction="batchmean")


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
    tau = torch.full_like(student_logits, t_nontarget, dtype=torch.float32)
    tau.scatter_(1, targets.view(-1, 1), t_target)  # (B, C)
    return _softened_kl(student_logits, teacher_logits, tau, scale=kd_scale(t_target, t_nontarget, scaling))


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 4.0) -> torch.Tensor:
    """Classic knowledge distillation term (Hinton, Vinyals, Dean, arXiv:1503.02531, 2015):
    ``T**2 * mean_b KL(softmax(z_t / T) || softmax(z / T))``."""
    return _softened_kl(student_logits, teacher_logits, temperature, scale=temperature**2)


def soft_cross_entropy(student_logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """``mean_b sum_c -q[b, c] log softmax(z)[b, c]`` for a soft target distribution `q` (detached)."""
    return -(target_probs.detach().float() * F.log_softmax(student_logits.float(), dim=1)).sum(1).mean()


def ps_kd_alpha(epoch: int, epochs: int, *, alpha_final: float = 0.8) -> float:
    """PS-KD's linearly growing trust in the past predictions: alpha_T * (t + 1) / T, 0 in the first epoch."""
    return 0.0 if epoch == 0 else alpha_final * (epoch + 1) / epochs


def kd_warmup_factor(epoch: int, warmup: int) -> float:
    """The share of the KD weight in (0-based) `epoch` under a linear warm-up over `warmup` epochs:
    1/warmup in the first epoch, 1 from epoch `warmup` - 1 on; always 1 without warm-up (DKD, Zhao et
    al., CVPR 2022, warms its distillation term up the same way)."""
    return 1.0 if warmup <= 1 else min(1.0, (epoch + 1) / warmup)


@dataclass(frozen=True)
class Method:
    """A training method: which teacher it needs and its published defaults.

    `teacher` is one of: ``none`` (no teacher), ``view`` (the same network on another view of the same
    images), ``class`` (the network on another image of the same class), ``history`` (the network's own
    predictions from the previous epoch).
    """

    name: str
    teacher: str
    citation: str
    t_target: float = 4.0
    t_nontarget: float | None = None
    kd_weight: float = 1.0
    ps_alpha: float | None = None


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ce", "none", "Plain cross-entropy; no distillation."),
        Method(
            "kd", "view", "Hinton, Vinyals, Dean. Distilling the knowledge in a neural network. arXiv:1503.02531, 2015."
        ),
        Method(
            "cs-kd",
            "class",
            "Yun, Park, Lee, Shin. Regularizing class-wise predictions via self-knowledge distillation. CVPR 2020.",
        ),
        Method(
            "ps-kd",
            "history",
            "Kim, Ji, Yoon, Hwang. Self-knowledge distillation with progressive refinement of targets. ICCV 2021.",
            ps_alpha=0.8,
        ),
        Method(
            "tss-kd",
            "view",
            "Liu et al. Be your own doctor: temperature scaling self-knowledge distillation for medical image "
            "classification. Neurocomputing 638 (2025) 130115.",
            t_nontarget=0.4,
        ),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise StudioError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}.")
    return METHODS[name]


def compute_loss(
    method: str,
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    teacher_logits: torch.Tensor | None = None,
    past_probs: torch.Tensor | None = None,
    t_target: float = 4.0,
    t_nontarget: float = 0.4,
    kd_weight: float | torch.Tensor = 1.0,
    alpha: float | torch.Tensor = 0.0,
    kd_scaling: str = "paper",
) -> dict[str, torch.Tensor]:
    """The objective of `method` for one batch, as ``{"loss", "ce", "kd"}``.

    `teacher_logits` is needed by kd, cs-kd and tss-kd; `past_probs` (B, C) and `alpha` by ps-kd;
    `kd_scaling` (see `kd_scale`) matters to tss-kd only. `kd_weight` and `alpha` may be device tensors,
    so that a captured step reads their current values.
    """
    ce = F.cross_entropy(student_logits.float(), targets)
    if method == "ce":
        return {"loss": ce, "ce": ce, "kd": torch.zeros_like(ce)}
    if method == "ps-kd":
        soft = soft_cross_entropy(student_logits, past_probs)
        # (1 - a) * CE(onehot) + a * CE(past) == CE((1 - a) * onehot + a * past), PS-KD's target.
        return {"loss": (1 - alpha) * ce + alpha * soft, "ce": ce, "kd": soft}
    if method in ("kd", "cs-kd"):
        kd = kd_loss(student_logits, teacher_logits, temperature=t_target)
    elif method == "tss-kd":
        kd = tss_kd_loss(
            student_logits, teacher_logits, targets, t_target=t_target, t_nontarget=t_nontarget, scaling=kd_scaling
        )
    else:
        raise StudioError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}.")
    return {"loss": ce + kd_weight * kd, "ce": ce, "kd": kd}
