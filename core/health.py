"""Is a run learning? The collapse rule and the chance check behind a run's `warnings`.

A self-distillation term that is too strong can be satisfied by a constant output: the student then
matches its teacher on every view, whatever the image. TSS-KD at the paper's scaling does this when
trained from scratch (README, "Results"; bench/results/methods-gpu-synthetic.json holds the per-epoch
figures this rule was set on). An epoch looks collapsed when validation accuracy sits at the
majority-class rate and the output no longer tells images apart, in either of two ways:
- `logit_spread`, the standard deviation of the student's logits across a batch (averaged over
  classes), has fallen below a fifth of its first-epoch value: nearly the same logits for every image;
- `val_top_class_share`, the share of validation images given the most often predicted class, is at
  least 0.9: one answer for (nearly) everything, however the logits vary.
A run is flagged after two such epochs in a row. A healthy run that is still near chance early on keeps
its spread and spreads its answers, so it is not flagged.

A run whose loss is no longer a number has diverged (a learning rate or KD weight far too high): its
weights are lost, so it fails at the end of that epoch with `Diverged`, saying so, instead of failing
further on in whatever first chokes on the NaN.
"""

from __future__ import annotations

import math

import torch

SPREAD_DROP = 0.2  # "fallen far": under a fifth of the first epoch's spread
TOP_SHARE = 0.9  # "one answer": at least 90% of the validation images get the same class
MIN_MARGIN = 0.02  # accuracy within at least 2 points of the majority rate counts as chance
PATIENCE = 2  # epochs in a row


def majority_rate(labels: torch.Tensor) -> float:
    """The share of the most common class: the accuracy of always answering it."""
    if labels.numel() == 0:
        return 0.0
    return float(torch.bincount(labels.flatten().long().cpu()).max()) / labels.numel()


def near_chance(accuracy: float | None, majority: float, n: int) -> bool:
    """Accuracy on `n` images no further above the majority rate than two standard errors of an accuracy
    at that rate (at least `MIN_MARGIN`): what a model answering without looking could score."""
    if accuracy is None or not math.isfinite(accuracy) or n <= 0:
        return False
    margin = max(MIN_MARGIN, 2 * math.sqrt(majority * (1 - majority) / n))
    return accuracy <= majority + margin


PAPER_ADVICE = "Use the stable KD scaling (--kd-scaling nontarget, the default), a smaller KD weight or a KD warm-up."
DATA_ADVICE = "check that the classes differ in what the images show"


def collapse_advice(uses: tuple[str, ...], kd_scaling: str | None) -> str:
    """What to change after a collapse, for a method using the settings `uses` (core.config.applies): the
    stable scaling where the paper's is in use, else the KD term's weight and warm-up, else the data."""
    if "kd_scaling" in uses and kd_scaling == "paper":
        return PAPER_ADVICE
    knobs = [
        say for k, say in (("kd_weight", "a smaller KD weight"), ("kd_warmup", "a longer KD warm-up")) if k in uses
    ]
    if knobs:
        return f"Try {' or '.join(knobs)}, and {DATA_ADVICE}."
    return f"{DATA_ADVICE[0].upper()}{DATA_ADVICE[1:]}, and try a lower learning rate or more epochs."


def collapse_warning(rows: list[dict], majority: float, n_val: int, *, advice: str = PAPER_ADVICE) -> dict | None:
    """The `collapse` warning once `PATIENCE` epochs in a row look collapsed (see the module text), at the
    last of them; None while the run looks healthy. `rows` are the run's metrics rows, first epoch first;
    `n_val` the number of validation images; `advice` what to change (`collapse_advice`)."""
    if not rows or rows[0].get("logit_spread") is None:
        return None  # a run recorded before the spread was measured
    first = rows[0]["logit_spread"]
    streak = 0
    for row in rows:
        flat = row.get("logit_spread", first) < SPREAD_DROP * first
        one_answer = (row.get("val_top_class_share") or 0.0) >= TOP_SHARE
        collapsed = (flat or one_answer) and near_chance(row.get("val_acc"), majority, n_val)
        streak = streak + 1 if collapsed else 0
        if streak >= PATIENCE:
            how = (
                f"the spread of its outputs fell from {first:.3g} to {row['logit_spread']:.3g}"
                if flat
                else f"it gives {row['val_top_class_share']:.0%} of the validation images the same class"
            )
            return {
                "kind": "collapse",
                "epoch": row["epoch"],
                "message": (
                    f"the model collapsed to a near-constant output: validation accuracy {row['val_acc']:.1%} is "
                    f"at the majority-class rate ({majority:.1%}) and {how}. {advice}"
                ),
            }
    return None


def chance_warning(accuracy: float | None, majority: float, n: int, *, epoch: int) -> dict | None:
    """The `chance` warning when a finished run's test accuracy on `n` images is no better than always
    answering the most common class."""
    if not near_chance(accuracy, majority, n):
        return None
    return {
        "kind": "chance",
        "epoch": epoch,
        "message": (
            f"test accuracy {accuracy:.1%} is no better than always answering the most common class "
            f"({majority:.1%}) would score: this model has not learned the task. Train longer, or check the data "
            "and the settings."
        ),
    }


class Diverged(RuntimeError):
    """A run whose loss became NaN or infinite: a training failure (the run is marked failed), not a
    mistake in its settings found before it started (`StudioError`)."""


def finite_model(model: torch.nn.Module) -> bool:
    """Whether every weight and batch-norm statistic of `model` is a finite number (one host sync)."""
    checks = [torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True


def diverged(what: str, *, epoch: int, lr: float, kd_weight: float | None) -> Diverged:
    """The failure of a run that diverged in `epoch`, saying `what` showed it and what to lower."""
    weight = f" or KD weight ({kd_weight:g})" if kd_weight else ""
    return Diverged(
        f"the training diverged in epoch {epoch}: {what}. Start again with a lower learning rate ({lr:g}){weight}."
    )


def check_finite(
    sums: dict[str, float], model: torch.nn.Module, *, epoch: int, lr: float, kd_weight: float | None
) -> None:
    """Raise `Diverged` when an epoch's step sums (`core.engine.SUMS`) or the model it left hold a NaN or an
    infinity (a last step can turn finite weights into NaN after its loss was computed)."""
    bad = [k for k in ("loss", "ce", "kd") if not math.isfinite(sums[k])]
    if bad:
        raise diverged(f"its loss became {sums[bad[0]]}", epoch=epoch, lr=lr, kd_weight=kd_weight)
    if not finite_model(model):
        raise diverged("its weights are no longer finite numbers", epoch=epoch, lr=lr, kd_weight=kd_weight)
