"""The Train tab's watched run: its progress line (epoch, speed, time left, the model it keeps), warnings, curves
and log, sent only when they changed; and the run picker, live runs first, that follows the runs folder."""

from __future__ import annotations

import gradio as gr

from core import figures as plots
from core import listing, runs
from core.dataset import burned_in_files
from ui.context import Studio, from_address, repick


def duration(seconds: float) -> str:
    """A time span as people say it: "40 s", "12 min", "2 h 1 min"."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def warnings_text(status: dict) -> str:
    """A run's warnings (collapse, chance) as the lines shown in red beside the progress line."""
    return "\n\n".join(f"**Warning ({w['kind']}, epoch {w['epoch']}):** {w['message']}" for w in status["warnings"])


def controls(status: str | None) -> tuple:
    """Stop, Resume and "Use its settings" for a watched run in `status` (None: no run to watch), each live only
    where it can act: Stop on a queued or running run, Resume on a stopped or failed one."""
    return (
        gr.update(interactive=status in ("queued", "running")),
        gr.update(interactive=status in ("stopped", "failed")),
        gr.update(interactive=status is not None),
    )


def monitor(ctx: Studio, run_id: str, seen: tuple | None = None):
    """Progress text, warnings, curves, log tail and status of the run being watched, for the timer: nothing
    is sent when nothing changed, and the curves are redrawn only when a new epoch was written.
    Returns (progress, warnings, curves, log, status, the run's settings, what was seen, and the Stop, Resume
    and "Use its settings" buttons: `controls`)."""
    if not run_id:
        return "", "", None, "", None, None, None, *controls(None)
    try:
        s = ctx.jobs.status(run_id)
    except Exception as e:  # a deleted or unknown run: say so instead of failing every tick
        return f"**{e}**", "", None, "", None, None, None, *controls(None)
    run = ctx.jobs.find(run_id)
    tail = runs.Run(run).log_tail(15)
    now = (run_id, s["epoch"], repr(s), tail)
    if seen is not None and tuple(seen) == now:
        return (*[gr.skip()] * 6, seen, *[gr.skip()] * 3)
    same_curves = seen is not None and tuple(seen[:2]) == now[:2]
    latest = s["latest"] or {}
    state = "starting (loading its data)" if s.get("starting") else s["status"]
    text = f"**{s['run']}**: {state}, epoch {s['epoch']}/{s['epochs']}"
    if latest:
        text += f", {latest.get('images_per_s', 0):.0f} images/s"
        text += f", val acc {latest['val_acc']:.3f}, val AUC " + (
            f"{latest['val_auc']:.3f}" if latest.get("val_auc") is not None else "n/a"
        )
    if s.get("seconds_left"):
        text += f", about {duration(s['seconds_left'])} left"
    text += best_text(s)
    if s.get("error"):
        text += f"\n\n**Error:** {s['error']}"
    text += burned_in_text(s.get("burned_in"))
    chance = s.get("chance_acc")  # jobs.status read status.json once already
    curves = gr.skip() if same_curves else plots.live_curves({s["run"]: runs.read_metrics(run)}, chance_acc=chance)
    settings = gr.skip() if same_curves else runs.Run(run).config()  # the run's own, not the form's
    return text, warnings_text(s), curves, tail, s, settings, now, *controls(s["status"])


def burned_in_text(count: int | None) -> str:
    """The note beside a run whose data has DICOM files that say text is burned into their pixels; else ''."""
    if not count:
        return ""
    return (
        f"\n\n**Note on the data:** {burned_in_files(count, 'its')} (BurnedInAnnotation). It may "
        "identify a patient: the run's report leaves out sample scans. And a model can learn the text instead "
        "of the anatomy: check its lesion maps in Diagnose."
    )


def best_text(s: dict) -> str:
    """The model the run keeps, as the progress line names it: its epoch and validation figures, and the test
    figures once the run is done; '' before the first epoch."""
    if not s.get("best_epoch") or s.get("val_acc") is None:
        return ""
    auc = "n/a" if s.get("val_auc") is None else f"{s['val_auc']:.3f}"
    text = f"\n\nKept model: epoch {s['best_epoch']} (val acc {s['val_acc']:.3f}, val AUC {auc})"
    if s.get("test_acc") is not None:
        test_auc = "n/a" if s.get("test_auc") is None else f"{s['test_auc']:.3f}"
        text += f"; test acc {s['test_acc']:.3f}, test AUC {test_auc}"
    elif s["status"] == "running":
        text += " so far"
    if s.get("chance_acc") is not None:
        text += f"; chance {s['chance_acc']:.3f}"
    return text + "."


def run_choices(ctx: Studio) -> list[str]:
    """Run ids for the Train tab's picker: live runs (running, queued) first, then the rest, newest first."""
    listed = listing.list_runs(ctx.runs_dir)
    live = [r["run"] for r in listed if r["status"] in ("running", "queued")]
    return live + [r["run"] for r in listed if r["run"] not in live]


def follow_runs(ctx: Studio, watched: str | None, last: list | None):
    """The picker's choices when they changed; a watched run that was deleted is let go."""
    choices = run_choices(ctx)
    if choices == last:
        return gr.skip(), gr.skip()
    return repick(choices, watched), choices


def reopen(ctx: Studio, request: gr.Request):
    """On page load: the run named in the page's address (?run=ID), so a reload comes back to it."""
    choices = run_choices(ctx)
    return gr.update(choices=choices, value=from_address(request, "run", choices)), choices
