"""What the temperatures do: soft targets under single-temperature KD and under TSS-KD, and the loss split.

For one sample with student logits `z`, teacher logits `z_t` and target class `y`, TSS-KD softens the
target class with `t_target` and the others with `t_nontarget`. The distillation term
``S * KL(q || p)``, with ``S = t_target**2`` (paper scaling) or ``t_nontarget**2`` (nontarget scaling,
the studio's default; see core.losses.kd_scale), splits exactly into the target class's share and the
non-target classes' share (the two sums below add up to it).
"""

from __future__ import annotations

import numpy as np

from core.errors import StudioError
from core.losses import kd_curvature, kd_scale


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


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
    """Distributions and loss parts for one sample (float64) under the KD `scaling`, and the term's
    curvature `s` relative to classic KD (core.losses.kd_curvature). Lists are indexed by class."""
    z, zt = np.asarray(student, np.float64), np.asarray(teacher, np.float64)
    if z.ndim != 1 or z.shape != zt.shape or len(z) < 2:
        raise StudioError("student and teacher need the same number of logits, at least two.")
    if not 0 <= target < len(z):
        raise StudioError(f"the target class must be between 0 and {len(z) - 1}.")
    if t_target <= 0 or t_nontarget <= 0:
        raise StudioError("temperatures must be positive.")
    if not (np.isfinite(z).all() and np.isfinite(zt).all()):
        raise StudioError("logits must be finite numbers.")
    tau = np.full_like(z, t_nontarget)
    tau[target] = t_target
    q, p = _softmax(zt / tau), _softmax(z / tau)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = kd_scale(t_target, t_nontarget, scaling) * np.where(q > 0, q * (np.log(q) - np.log(p)), 0.0)
    ce = float(-np.log(_softmax(z)[target]))
    tss = float(terms.sum())
    q_kd, p_kd = _softmax(zt / t_target), _softmax(z / t_target)
    kd = float(t_target**2 * np.sum(np.where(q_kd > 0, q_kd * (np.log(q_kd) - np.log(p_kd)), 0.0)))
    return {
        "teacher_plain": _softmax(zt).tolist(),
        "teacher_kd": q_kd.tolist(),
        "teacher_tss": q.tolist(),
        "student_plain": _softmax(z).tolist(),
        "student_tss": p.tolist(),
        "ce": ce,
        "kd_single_temperature": kd,
        "tss_kd": tss,
        "tss_target_part": float(terms[target]),
        "tss_nontarget_part": float(terms.sum() - terms[target]),
        "total": ce + kd_weight * tss,
        "curvature_s": kd_curvature(t_target, t_nontarget, kd_weight=kd_weight, scaling=scaling),
    }
