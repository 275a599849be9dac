"""Train a run end to end, and `python -m core.train`.

`run_training` checks the settings, loads the data, creates (or reopens) the run folder (core.runs) and
trains it with `core.fit.Fit`, which strings core.engine's epochs together, keeps the best model and the
resume checkpoint (core.checkpoint) and watches the run's health; `core.fit.conclude` then scores the best
model on the test split and fits its calibration and out-of-distribution check. A run never overwrites
another. SIGINT/SIGTERM finish the current step, save the checkpoint and mark the run ``stopped``;
``--resume RUN`` continues from the saved step with the same data order and augmentation draws;
``--like RUN`` starts a new run with that run's settings, changed by the flags given with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from core import cli, config, distributed, runs, settings
from core.config import OPTIMIZERS, PRESETS, DataConfig, TrainConfig  # noqa: F401 - re-exported
from core.data import load_dataset
from core.device import pick_device
from core.engine import StopFlag  # noqa: F401 - re-exported
from core.errors import StudioError
from core.estimate import note_time_outside_epochs, process_started
from core.fit import Fit, announce, conclude, console_log, record_failure, run_log
from core.graphs import training_device
from core.model import check_pretrained
from core.train_args import (  # noqa: F401 - get_args_parser re-exported
    check_prepared,
    get_args_parser,
    given_settings,
    like_config,
    parse_args,
    resume_conflicts,
)

log = logging.getLogger("core.train")


def _resume_config(path: str, device: str | None) -> tuple[TrainConfig, Path]:
    run = Path(path)
    cfg = TrainConfig.from_dict(runs.Run(run).required_config())
    return (replace(cfg, device=device) if device else cfg), run


def _check_resumable(run: Path) -> None:
    status = runs.Run(run).status()
    if status.get("status") == "done":
        raise StudioError(f"{run.name} has already finished; start a new run instead.")
    # "running" only: a run the studio queued and launched this trainer for is marked queued with its pid; and
    # only while the process recorded lives, not another that took its pid after it died with the machine
    if status.get("status") == "running" and runs.trainer_alive(status):
        raise StudioError(f"{run.name} is still running (process {status.get('pid')}).")


def run_training(
    cfg: TrainConfig, *, resume: str | None = None, stop: StopFlag | None = None, started: float | None = None
) -> Path:
    """Validate, load the data, create (or reopen) the run directory and train. Returns the run path.

    User errors found before training (bad value, missing data) raise `StudioError` and leave no run
    directory behind. Errors during training mark the run `failed` with the reason and re-raise.
    Under torchrun every rank calls this; rank 0 alone checks and writes the run directory.
    """
    started = time.perf_counter() if started is None else started  # the trainer's process's start, from main()
    stop = stop or StopFlag()
    run = None
    if resume:
        cfg, run = _resume_config(resume, None if cfg.device == "auto" else cfg.device)
    cfg = cfg.resolved()
    pick_device(cfg.device)  # refuse a device that is not here before joining a group
    group = distributed.init(cfg.device)
    try:
        device = training_device(distributed.rank_device(group, cfg.device), cfg.cuda_graphs, group.world)
        if cfg.batch_size < 2 * group.world:
            raise StudioError(f"the batch size must be at least {2 * group.world} for {group.world} processes.")
        data = load_dataset(cfg.data)  # every rank, the same data
        if cfg.pretrained and not resume:  # before a run folder is made, as the data
            check_pretrained(cfg.pretrained, cfg.arch, cfg.data.image_size)

        def prepare() -> Path:
            if resume:
                _check_resumable(run)
                return run
            return runs.Run.create(cfg.runs_dir, cfg.name, config.to_record(cfg)).path

        run = distributed.share_outcome(group, prepare)
        return _train_in(run, cfg, data, device, stop=stop, resume=bool(resume), group=group, started=started)
    finally:
        distributed.finish(group)


def _train_in(run: Path, cfg: TrainConfig, data, device, *, stop, resume: bool, group, started: float) -> Path:
    main = group.main
    if main:
        runs.set_status(
            run, "running", pid=os.getpid(), epoch=0, epochs=cfg.epochs, device=str(device), processes=group.world
        )
    with run_log(run) if main else contextlib.nullcontext():
        try:
            announce(run, cfg, data, device, group)
            fit = Fit(cfg, run, data, device, stop=stop, resume=resume, group=group)
            outcome = fit.to_end()
            if main:
                conclude(run, data, device, cfg, outcome, best_val=fit.best_val)
                if fit.fresh:  # a resumed run's time outside its epochs is spread over its sessions
                    note_time_outside_epochs([run], started)
        except BaseException as e:
            if main:
                record_failure(run, e)
            raise
    return run


config_from_args = settings.from_args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prepared:
        try:
            check_prepared(args.prepared)
        except StudioError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        args.resume = args.prepared  # the same path from here: the run's own settings, its folder
    if args.resume:
        changed = resume_conflicts(args.resume, given_settings(argv))
        if changed:
            print(
                "error: a resumed run keeps its own settings; these differ and would not apply: "
                + "; ".join(changed)
                + ". Start a new run to change them (--device may change).",
                file=sys.stderr,
            )
            return 2
    main_rank = os.environ.get("RANK", "0") == "0"
    if main_rank:  # under torchrun, rank 0 speaks for the group
        console_log()
    log.setLevel(logging.INFO)
    stop = StopFlag()
    stop.install()
    try:
        cfg = like_config(args.like, given_settings(argv)) if args.like else config_from_args(args)
        run = run_training(cfg, resume=args.resume, stop=stop, started=process_started())
    except StudioError as e:
        if main_rank:
            print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # already recorded in the run's status.json and train.log
        if main_rank:
            print(f"error: training failed: {e}", file=sys.stderr)
        return 1
    if not main_rank:
        return 0
    status = runs.Run(run).status()
    print(
        json.dumps(
            {
                "run": str(run),
                "status": status.get("status"),
                **{k: status.get(k) for k in ("best_epoch", "val_auc", "test_acc", "test_auc")},
            }
        )
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
