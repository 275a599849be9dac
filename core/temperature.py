"""What the temperatures do: soft targets under single-temperature KD and under TSS-KD, and the loss split.

For one sample with student logits `z`, teacher logits `z_t` and target class `y`, TSS-KD softens the
target class with `t_target` and the others with `t_nontarget`. The distillation term
``S * KL(q || p)``, with ``S = t_target**2`` (paper scaling) or ``t_nontarget**2`` (nontarget scaling,
the studio's default; see core.losses.kd_scale), splits exactly into the target class's share and the
non-target classes' share (the two sums below add up to it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.errors import StudioError
from core.losses import kd_curvature, kd_loss, kd_scale, softened_kl_terms, tss_kd_loss, tss_temperatures


def temperature_view(
    student: list[float],
    teacher: list[float],
    target: int,
    *,
    t_target: float,
    t_nontarget: float,
    kd_weight: float = 1.0,
    scaling: str = "nontarget",
) -> dict:
    """Distributions and loss parts for one sample under the KD `scaling`, computed by the training loss
    itself (core.losses) in float64, and the term's curvature `s` relative to classic KD
    (core.losses.kd_curvature). Lists are indexed by class."""
    if len(student) != len(teacher) or len(student) < 2:
        raise StudioError("student and teacher need the same number of logits, at least two.")
    if not 0 <= target < len(student):
        raise StudioError(f"the target class must be between 0 and {len(student) - 1}.")
    if t_target <= 0 or t_nontarget <= 0:
        raise StudioError("temperatures must be positive.")
    if not all(math.isfinite(v) for v in (*student, *teacher)):
        raise StudioError("logits must be finite numbers.")
    z, zt = (torch.tensor([list(v)], dtype=torch.float64) for v in (student, teacher))  # one sample (1, C)
    y = torch.tensor([target])
    tau = tss_temperatures(z, y, t_target, t_nontarget)
    terms = softened_kl_terms(z, zt, tau, scale=kd_scale(t_target, t_nontarget, scaling))[0]
    tss = float(tss_kd_loss(z, zt, y, t_target=t_target, t_nontarget=t_nontarget, scaling=scaling))
    ce = float(F.cross_entropy(z, y))

    def probs(logits, temperature=1.0):
        return F.softmax(logits / temperature, dim=1)[0].tolist()

    return {
        "teacher_plain": probs(zt),
        "teacher_kd": probs(zt, t_target),
        "teacher_tss": probs(zt, tau),
        "student_plain": probs(z),
        "student_tss": probs(z, tau),
        "ce": ce,
        "kd_single_temperature": float(kd_loss(z, zt, temperature=t_target)),
        "tss_kd": tss,
        "tss_target_part": float(terms[target]),
        "tss_nontarget_part": float(terms.sum() - terms[target]),
        "total": ce + kd_weight * tss,
        "curvature_s": kd_curvature(t_target, t_nontarget, kd_weight=kd_weight, scaling=scaling),
    }
