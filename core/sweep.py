"""Temperature sweeps: one TSS-KD run per (t_target, t_nontarget) pair, and the grid of their results.

The Temperatures tab and `bench/temperatures.py` build the same grid here and queue it on the job
manager, which trains several small runs per device at once when asked (`--runs-per-device`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from core import listing
from core.config import TrainConfig
from core.errors import StudioError

MAX_RUNS = 25
_NUMBERED_TAG = r"sweep(\d{1,6})"  # a sweep named by number (`new_tag`)
_NUMBERED = re.compile(f"^{_NUMBERED_TAG}-")


def new_tag(runs_dir) -> str:
    """A new sweep's name: `sweep<N>`, one more than the highest N a run under `runs_dir` starts with, so no run
    there shares it. Its runs' folders carry the date and time once (`sweep3-T4-t0.4-20261205-115022`); sweeps
    named before, after their date and time (`sweep20261205-115022`), keep their names and are still read."""
    root = Path(runs_dir)
    names = [p.name for p in root.iterdir()] if root.is_dir() else []
    return f"sweep{max((int(m[1]) for n in names if (m := _NUMBERED.match(n))), default=0) + 1}"


def parse_numbers(text: str, what: str) -> list[float]:
    """Numbers as the Temperatures tab's fields, the API and `python -m core.grid` take them: "2, 4, 8" (commas
    or semicolons between them, spaces anywhere). `StudioError` naming `what` for anything else, or none."""
    try:
        values = [float(v) for v in str(text).replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise StudioError(f"{what}: write numbers separated by commas (2, 4, 8), not {text!r}.") from None
    if not values:
        raise StudioError(f"{what}: give at least one number.")
    return values


# what a sweep sets in each of its runs itself (`temperature_grid`): given with a sweep, they would not apply
SET_BY_THE_SWEEP = ("t_target", "t_nontarget", "name")


def set_by_the_sweep(given: dict) -> list[str]:
    """The settings among `given` (by field name) that a sweep sets in each of its runs itself, and a method
    other than TSS-KD: given with a sweep (on the command line, to the API), they would not apply."""
    wrong = [k for k in SET_BY_THE_SWEEP if k in given]
    return wrong + (["method"] if given.get("method", "tss-kd") != "tss-kd" else [])


def temperature_grid(
    base: TrainConfig, t_targets: list[float], t_nontargets: list[float], *, tag: str
) -> list[TrainConfig]:
    """One TSS-KD config per pair, named `<tag>-T<t_target>-t<t_nontarget>`; everything else from `base`. A
    value given twice gives its runs once ("2, 2" trained the same run twice)."""
    t_targets, t_nontargets = list(dict.fromkeys(t_targets)), list(dict.fromkeys(t_nontargets))
    if not t_targets or not t_nontargets:
        raise StudioError("give at least one t_target and one t_nontarget value.")
    if len(t_targets) * len(t_nontargets) > MAX_RUNS:
        raise StudioError(f"a sweep may hold at most {MAX_RUNS} runs.")
    bad = [t for t in (*t_targets, *t_nontargets) if not (np.isfinite(t) and t > 0)]
    if bad:
        raise StudioError(f"temperatures must be positive numbers, not {', '.join(f'{b:g}' for b in bad)}.")
    return [
        replace(base, method="tss-kd", t_target=tt, t_nontarget=tn, name=f"{tag}-T{tt:g}-t{tn:g}").resolved()
        for tt in t_targets
        for tn in t_nontargets
    ]


def grid_results(runs_dir, tag: str, *, metric: str = "best_val_auc") -> tuple[list, list, np.ndarray, list[dict]]:
    """The sweep `tag` under `runs_dir` as a grid: (t_targets, t_nontargets, values, rows), NaN where a run
    has no value yet. `metric` is a field of `core.listing.list_runs` rows (best_val_auc, test_acc, ...)."""
    rows = [r for r in listing.list_runs(runs_dir) if r["run"].startswith(tag + "-")]
    tts = sorted({r["t_target"] for r in rows})
    tns = sorted({r["t_nontarget"] for r in rows})
    grid = np.full((len(tts), len(tns)), np.nan)
    for r in rows:
        if r.get(metric) is not None:
            grid[tts.index(r["t_target"]), tns.index(r["t_nontarget"])] = r[metric]
    return tts, tns, grid, rows


# a sweep's run: `sweep<N>-T<t_target>-t<t_nontarget>-<time>`, or the older `sweep<date>-<time>[_n]-T...`
SWEEP_RUN = re.compile(rf"^(?P<tag>[A-Za-z]+\d{{8}}-\d{{6}}(?:_\d+)?|{_NUMBERED_TAG})-T[0-9.e+-]+-t[0-9.e+-]+-")


def stop_sweep(jobs, tag: str) -> list[str]:
    """Stop every queued or running run of the sweep `tag` on the job manager `jobs` (core.jobs.JobManager):
    queued ones leave the queue, running ones stop after their current step (a grid's process ends when
    its last run is stopped). Returns the names asked to stop, in the sweep's order; each resumes alone.
    A run that ended meanwhile is left as it ended."""
    rows = [r for r in grid_results(jobs.runs_dir, tag)[3] if r["status"] in ("queued", "running")]
    if not rows:
        raise StudioError(f"no run of the sweep {tag} is queued or running.")
    asked = []
    for r in sorted(rows, key=lambda r: r["run"]):
        try:
            jobs.stop(r["run"])
        except StudioError:  # it finished (or failed) between the listing and the stop
            continue
        asked.append(r["run"])
    return asked


def progress_text(rows: list[dict]) -> str:
    """A sweep's progress as one line: "3 of 12 runs done, 1 running, 8 queued" (failed and stopped too)."""
    counts = {s: sum(r["status"] == s for r in rows) for s in ("running", "queued", "stopped", "failed")}
    done = sum(r["status"] == "done" for r in rows)
    rest = "".join(f", {n} {s}" for s, n in counts.items() if n)
    return f"{done} of {len(rows)} runs done{rest}"


def list_sweeps(runs_dir) -> list[dict]:
    """Every sweep under `runs_dir`, newest first: its name and how many of its runs are done, running or
    queued, read from the run folders (a sweep is the runs named `<tag>-T<t_target>-t<t_nontarget>-...`)."""
    sweeps: dict[str, dict] = {}
    for r in listing.list_runs(runs_dir):  # newest first
        m = SWEEP_RUN.match(r["run"])
        if not m:
            continue
        s = sweeps.setdefault(m["tag"], {"sweep": m["tag"], "runs": 0, "done": 0, "running": 0, "queued": 0})
        s["runs"] += 1
        if r["status"] in ("done", "running", "queued"):
            s[r["status"]] += 1
    return list(sweeps.values())
