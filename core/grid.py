"""A temperature grid in one process: runs that differ only in their temperatures, trained together.

A sweep is many short runs, and each run alone pays its own start: a Python and torch start, the data
loaded (and placed on the GPU), the first steps' warm-up. Here the grid's runs share one process and one
copy of the data and are trained an epoch at a time in turn, each by its own `core.fit.Fit`. Every run
draws the same batches and the same augmented views as the others (one seed: a paired design, so the
heatmap compares temperatures and nothing else), and each is exactly the run it would have been alone:
on the CPU its weights are bit-identical to a `core.train` run of the same config
(`tests/test_grid.py`). Each grid point is an ordinary run folder (config, metrics, model, checkpoint)
that the Runs tab, the report and Diagnose open like any other; a stopped one resumes alone with
`core.train --resume`. A run that fails leaves the others training, and so does a run stopped alone (the job
manager asks through `Run.request_stop`, which the run's loop reads after each step); SIGTERM or Ctrl-C
stops them all.

    python -m core.grid --t-targets 2,4 --t-nontargets 0.4,4 [any option of core.train]
    python -m core.grid --prepared RUN [RUN ...] [--device DEVICE]

The first makes a sweep as the Temperatures tab does (`sweep<N>-T<t_target>-t<t_nontarget>-<time>`, one
TSS-KD run per pair, every other setting as core.train takes it) and trains it here; the job manager
(`JobManager.submit_grid`) and so the Temperatures tab start the grids they prepared the second way.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from core import cli, config, distributed, runs, settings
from core.config import TrainConfig
from core.data import load_dataset
from core.engine import StopFlag, place
from core.errors import StudioError
from core.estimate import note_time_outside_epochs, process_started
from core.fit import Fit, announce, conclude, console_log, record_failure, run_log
from core.graphs import training_device
from core.model import check_pretrained
from core.sweep import new_tag, parse_numbers, set_by_the_sweep, temperature_grid
from core.train_args import HelpFormatter, check_prepared, given_settings, parse_args

log = logging.getLogger("core.train")

# what may differ between the runs of one grid; every other setting is shared, the data above all
VARYING = ("t_target", "t_nontarget", "name")


def check_grid(cfgs: list[TrainConfig]) -> None:
    """Refuse runs that cannot share one process: they must differ in nothing but `VARYING`."""
    if not cfgs:
        raise StudioError("a grid needs at least one run.")
    records = [config.to_record(cfg) for cfg in cfgs]
    first = records[0]
    differ = sorted(
        {k for r in records[1:] for k in first.keys() | r.keys() if k not in VARYING and r.get(k) != first.get(k)}
    )
    if differ:
        raise StudioError(
            "the runs of a grid may differ only in their temperatures; these settings differ: "
            + ", ".join(differ)
            + "."
        )


def create_grid(runs_dir: str | Path, cfgs: list[TrainConfig]) -> list[Path]:
    """The grid's run folders, each with its config, made together: one that cannot be made takes those made
    before it away again, so no half of a grid is left."""
    made: list[Path] = []
    try:
        for cfg in cfgs:
            made.append(runs.Run.create(runs_dir, cfg.name, config.to_record(cfg)).path)
    except BaseException:
        for run in made:
            runs.Run(run).delete()
        raise
    return made


def load_grid(paths: list[str | Path], device: str | None = None) -> list[tuple[Path, TrainConfig]]:
    """Prepared runs (folders with their config that have not trained) and their configs, checked."""
    out = []
    for path in paths:
        check_prepared(str(path))
        cfg = TrainConfig.from_dict(runs.Run(path).config())
        out.append((Path(path), replace(cfg, device=device) if device else cfg))
    names = [p.resolve() for p, _ in out]
    if len(set(names)) != len(names):
        raise StudioError("a run appears twice in the grid.")
    check_grid([cfg for _, cfg in out])
    return out


class RunStop:
    """The stop flag of one run in a grid: requested when the whole grid is stopped (a signal) or when this
    run alone was asked to stop (`Run.request_stop`); the request file is looked at no more than every
    `every_s` seconds, so a fast GPU step does not wait on the file system."""

    def __init__(self, grid: StopFlag, run: Path, every_s: float = 0.5):
        self.grid, self.run, self.every_s = grid, runs.Run(run), every_s
        self._alone, self._checked = False, float("-inf")

    @property
    def requested(self) -> bool:
        if self.grid.requested or self._alone:
            return True
        now = time.monotonic()
        if now - self._checked >= self.every_s:
            self._checked = now
            self._alone = self.run.stop_requested()
        return self._alone


def train_grid(
    grid: list[tuple[Path, TrainConfig]], *, stop: StopFlag | None = None, started: float | None = None, data=None
) -> dict[str, str]:
    """Train the prepared runs of `grid` in this process (on `data` when it was loaded already); returns run
    name -> how it ended."""
    started = time.perf_counter() if started is None else started  # the process's start, from main()
    stop = stop or StopFlag()
    cfg = grid[0][1].resolved()
    device = training_device(cfg.device, cfg.cuda_graphs)
    data = place(load_dataset(cfg.data) if data is None else data, device)  # once, for every run
    group = distributed.Group()
    members = [p.name for p, _ in grid]
    fits: dict[Path, Fit] = {}
    ended: dict[Path, str] = {}  # 'failed' as soon as a run fails; 'done' or 'stopped' once it has trained
    for run, run_cfg in grid:
        runs.set_status(
            run, "running", pid=os.getpid(), epoch=0, epochs=run_cfg.epochs, device=str(device), grid=members
        )
        with run_log(run):
            try:
                announce(run, run_cfg, data, device, group)
                log.info("trained in one process with %d other run(s) of its grid", len(grid) - 1)
                fits[run] = Fit(
                    run_cfg.resolved(), run, data, device, stop=RunStop(stop, run), resume=False, group=group
                )
            except Exception as e:  # this run fails; the others train
                record_failure(run, e)
                ended[run] = "failed"
    while any(run not in ended for run in fits):
        for run, fit in fits.items():
            if run in ended:
                continue
            if stop.requested:  # the runs not yet in this epoch end at their last epoch's checkpoint
                end = "stopped"
            else:
                with run_log(run):
                    try:
                        end = fit.epoch()
                    except Exception as e:
                        record_failure(run, e)
                        ended[run] = "failed"
                        continue
            if end is None:
                continue
            ended[run] = end
            runs.Run(run).clear_stop_request()  # answered, or too late to matter
            if end == "stopped":  # marked so at once: stopped alone, it may be resumed before this grid ends
                with run_log(run):
                    conclude(run, data, device, fit.cfg, end)
    for run, fit in fits.items():
        if ended[run] != "done":  # failed, or stopped and concluded above
            continue
        with run_log(run):
            try:
                conclude(run, data, device, fit.cfg, ended[run], best_val=fit.best_val)
            except Exception as e:
                record_failure(run, e)
                ended[run] = "failed"
    note_time_outside_epochs(list(fits), started)  # the data loaded once, each run's model, test and saving
    return {run.name: ended[run] for run, _ in grid}


def _temperatures(text: str) -> list[float]:
    """A sweep's temperatures read as the Temperatures tab reads them (`core.sweep.parse_numbers`)."""
    try:
        return parse_numbers(text, "temperatures")
    except StudioError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def sweep_parser() -> argparse.ArgumentParser:
    """The command line of a new sweep: its temperatures, and every option of core.train for the rest."""
    ap = argparse.ArgumentParser(
        prog="python -m core.grid",
        description=__doc__.split("\n\n")[0],
        epilog="or: python -m core.grid --prepared RUN [RUN ...] [--device DEVICE], to train run folders the "
        "studio prepared",
        formatter_class=HelpFormatter,
    )
    group = ap.add_argument_group("sweep")
    for flag, what in (("--t-targets", "target-class"), ("--t-nontargets", "non-target")):
        group.add_argument(flag, required=True, type=_temperatures, metavar="T,T,...", help=f"{what} temperatures")
    settings.add_arguments(ap)
    return ap


def sweep(argv: list[str] | None, *, stop: StopFlag, started: float) -> tuple[str, dict[str, str]]:
    """`python -m core.grid --t-targets ... --t-nontargets ... [options]`: the sweep's runs made as the
    Temperatures tab makes them and trained here. Everything is checked and the data loaded before a run folder
    is made; a refusal makes none. Returns the sweep's name and run name -> how it ended."""
    args = parse_args(argv, sweep_parser())
    wrong = set_by_the_sweep(given_settings(argv, sweep_parser()))
    if wrong:
        raise StudioError(
            "a sweep trains TSS-KD at each pair of --t-targets and --t-nontargets and names its runs itself; "
            f"leave out {', '.join('--' + k.replace('_', '-') for k in wrong)}."
        )
    base = settings.from_args(args).resolved()
    tag = new_tag(base.runs_dir)
    cfgs = temperature_grid(base, args.t_targets, args.t_nontargets, tag=tag)
    check_grid(cfgs)
    training_device(cfgs[0].device, cfgs[0].cuda_graphs)  # a device that is not here is refused before anything is made
    data = load_dataset(cfgs[0].data)
    if base.pretrained:
        check_pretrained(base.pretrained, base.arch, base.data.image_size)
    grid = list(zip(create_grid(base.runs_dir, cfgs), cfgs, strict=True))
    return tag, train_grid(grid, stop=stop, started=started, data=data)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    started = process_started()
    if "--prepared" not in argv:
        console_log()
        stop = StopFlag()
        stop.install()
        try:
            tag, ended = sweep(argv, stop=stop, started=started)
        except StudioError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(json.dumps({"sweep": tag, "runs": ended}))
        return 1 if "failed" in ended.values() else 0
    ap = argparse.ArgumentParser(prog="python -m core.grid", description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepared", nargs="+", required=True, metavar="RUN", help="prepared run folders to train")
    ap.add_argument("--device", default=None, help="the device for all of them (default: their config's)")
    args = ap.parse_args(argv)
    console_log()
    stop = StopFlag()
    stop.install()
    try:
        ended = train_grid(load_grid(args.prepared, args.device), stop=stop, started=started)
    except StudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(ended))
    return 1 if "failed" in ended.values() else 0


if __name__ == "__main__":
    cli.run(main)
