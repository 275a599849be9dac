"""Train a run end to end, and `python -m core.train`.

`run_training` checks the settings, loads the data, creates (or reopens) the run folder (core.runs) and
calls `fit`, which strings core.engine's epochs together, keeps the best model and the resume checkpoint
(core.checkpoint) and watches the run's health. `finish` then scores the best model on the test split and
fits its calibration and out-of-distribution check. A run never overwrites another. SIGINT/SIGTERM finish
the current step, save the checkpoint and mark the run ``stopped``; ``--resume RUN`` continues from the
saved step with the same data order and augmentation draws.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch

from core import calibration, checkpoint, config, distributed, engine, health, ood, runs
from core.config import OPTIMIZERS, PRESETS, DataConfig, TrainConfig  # noqa: F401 - re-exported
from core.data import load_dataset
from core.dataset import Dataset
from core.device import pick_device, precision
from core.engine import StopFlag
from core.errors import StudioError
from core.evaluate import classification_metrics
from core.losses import kd_warmup_factor, ps_kd_alpha
from core.methods import get_method
from core.model import ModelSpec, save_model
from core.train_args import check_prepared, get_args_parser, given_settings, parse_args, resume_conflicts  # noqa: F401

log = logging.getLogger("core.train")


def model_extra(cfg: TrainConfig, run: Path, epoch: int, metrics: dict) -> dict:
    """What model.json says beyond the architecture: how the model was trained and how well it did."""
    return {
        "method": cfg.method,
        "temperatures": {"t_target": cfg.t_target, "t_nontarget": cfg.t_nontarget},
        "kd_weight": cfg.kd_weight,
        "rga": cfg.rga,
        "run": run.name,
        "epoch": epoch,
        "metrics": metrics,
        "config": config.to_record(cfg),
    }


def fit(
    cfg: TrainConfig,
    run: Path,
    data: Dataset,
    device: torch.device,
    *,
    stop: StopFlag,
    resume: bool,
    group: distributed.Group | None = None,
) -> str:
    """Train into `run`; return the final status ('done' or 'stopped'). Only rank 0 writes files."""
    group = group or distributed.Group()
    amp, why = precision(device, cfg.amp)
    log.info("precision: %s", why)
    folder = runs.Run(run)
    if group.main:
        folder.set_status(
            "running", precision={"autocast": str(amp).removeprefix("torch.") if amp else None, "why": why}
        )
    spec = ModelSpec(arch=cfg.arch, classes=list(data.classes), image_size=data.image_size, channels=data.channels)
    data = engine.place(data, device)
    train = data.train
    graphs = cfg.cuda_graphs is not False and train.images.is_cuda and group.world == 1
    if cfg.cuda_graphs and not graphs:
        log.warning("CUDA graphs off: the training data is not in GPU memory, so batches come from the host")
    if device.type == "cuda":
        log.info("CUDA graphs %s", "on: each batch size is captured once, then replayed" if graphs else "off")
    state, sampler = engine.new_state(cfg, spec, train, device, graphs=graphs)
    state.group = group
    if resume and folder.last_path.is_file():
        checkpoint.load_last(folder.last_path, state)
        if not group.main:
            state.sums.zero_()  # rank 0 carries the whole group's partial sums of an interrupted epoch
        log.info("resumed at epoch %d, step %d", state.epoch + 1, state.step)
    state.net = distributed.wrap(state.model, group, device)
    history = []
    if group.main:
        runs.truncate_metrics(run, state.epoch)
        history = runs.read_metrics(run)
    majority = health.majority_rate(data.val.labels)
    step = engine.make_stepper(state, cfg, cfg.augment(data.image_size), train, amp=amp, sampler=sampler, graphs=graphs)
    slices = engine.batches_per_epoch(len(train), cfg.batch_size, ranks=group.world)
    state.model.train()
    while state.epoch < cfg.epochs:
        epoch = state.epoch
        order = engine.epoch_order(len(train), seed=cfg.seed, epoch=epoch, device=train.images.device)
        warm = kd_warmup_factor(epoch, cfg.kd_warmup)
        if state.step == 0:
            state.sums.zero_()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        seen_before = int(state.sums[engine.SUMS.index("seen")].item())
        lr, stopping = engine.train_one_epoch(
            state,
            step,
            slices,
            order,
            cfg,
            alpha=ps_kd_alpha(epoch, cfg.epochs, alpha_final=cfg.ps_alpha),
            warm=warm,
            stop=stop,
        )
        if stopping and state.step < len(slices):
            distributed.sum_(group, state.sums)
            if group.main:
                checkpoint.save_last(folder.last_path, state)
            log.info(
                "stopped at epoch %d, step %d/%d; resume with --resume %s", epoch + 1, state.step, len(slices), run
            )
            return "stopped"
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t0
        distributed.sum_(group, state.sums)
        if group.main:  # rank 0 validates and writes; the others go on to the next epoch
            seen = state.sums[engine.SUMS.index("seen")].item() - seen_before
            val = engine.validate(state.model, data, cfg, amp)
            row = engine.epoch_row(state, cfg, lr=lr, warm=warm, val=val, images_per_s=seen / max(train_seconds, 1e-9))
            row["seconds"] = time.perf_counter() - t0
            if device.type == "cuda":
                row["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            _keep_best(folder, state, cfg, spec, row)
        state.epoch, state.step = epoch + 1, 0
        if group.main:
            checkpoint.save_last(folder.last_path, state)  # before the metrics: a resume truncates to it
            _report(folder, cfg, row, history, majority, len(data.val.labels))
        if stopping:
            return "stopped" if state.epoch < cfg.epochs else "done"
    return "done"


def _keep_best(folder: runs.Run, state, cfg: TrainConfig, spec: ModelSpec, row: dict) -> None:
    """Save the model when the epoch is the best so far, by val AUC (val accuracy without AUC)."""
    score = row["val_auc"] if row["val_auc"] is not None else row["val_acc"]
    if score > state.best_score:
        state.best_score, state.best_epoch = score, row["epoch"]
        metrics = {"val_acc": row["val_acc"], "val_auc": row["val_auc"]}
        save_model(state.model, spec, folder.model_path, extra=model_extra(cfg, folder.path, row["epoch"], metrics))


def _report(folder: runs.Run, cfg: TrainConfig, row: dict, history: list, majority: float, n_val: int) -> None:
    """Rank 0 after an epoch: append the metrics, update the status, check the run's health, log the line."""
    runs.append_metrics(folder.path, row)
    folder.set_status("running", epoch=row["epoch"], epochs=cfg.epochs, chance_acc=majority)
    history.append(row)
    _check_health(folder.path, cfg, history, majority, n_val)
    log.info(
        "epoch %d/%d  loss %.4f (ce %.4f, kd %.4f)  val acc %.4f auc %s  %.0f img/s  %.1fs",
        row["epoch"],
        cfg.epochs,
        row["train_loss"],
        row["train_ce"],
        row["train_kd"],
        row["val_acc"],
        "n/a" if row["val_auc"] is None else f"{row['val_auc']:.4f}",
        row["images_per_s"],
        row["seconds"],
    )


class CollapseError(StudioError):
    """A run ended by --stop-on-collapse."""


def _check_health(run: Path, cfg: TrainConfig, history: list[dict], majority: float, n_val: int) -> None:
    """Warn (status.json and the log) the first time the run looks collapsed; with `stop_on_collapse`,
    end it as failed with that reason."""
    warning = health.collapse_warning(history, majority, n_val)
    if warning is None:
        return
    if runs.add_warning(run, warning):
        log.warning("%s (epoch %d)", warning["message"], warning["epoch"])
    if cfg.stop_on_collapse:
        raise CollapseError(f"stopped on collapse at epoch {warning['epoch']}: {warning['message']}")


def finish(run: Path, data: Dataset, device: torch.device, cfg: TrainConfig) -> dict:
    """Score the best checkpoint on the test split, fit its calibration on the validation split and its
    out-of-distribution check on the training split, and record them in model.json; return the test metrics
    (uncalibrated). One float32 pass over each of val and test serves all three."""
    from core.model import load_model

    model, _, meta = load_model(run, device=device)
    splits = {"val": data.val, "test": data.test}
    passes = {k: ood.features(model, v.images, batch_size=cfg.eval_batch_size) for k, v in splits.items()}
    logits = {k: p["logits"] for k, p in passes.items()}
    labels = {k: v.labels.cpu() for k, v in splits.items()}
    test = classification_metrics(torch.softmax(logits["test"], 1).numpy(), labels["test"].numpy(), data.classes)
    meta["metrics"].update(
        test_acc=test["accuracy"],
        test_auc=test["auc"],
        test_balanced_accuracy=test["balanced_accuracy"],
        test_ece=test["ece"],
    )
    meta["calibration"] = calibration.calibration_record(logits, labels)  # temperature scaling on val
    try:  # the out-of-distribution check of Diagnose, fitted on train, its threshold on val
        meta["ood"] = ood.fit_and_save(model, run, data, passes["val"], passes["test"], batch_size=cfg.eval_batch_size)
    except StudioError as e:
        log.warning("no out-of-distribution check for this model: %s", e)
    runs.Run(run).write_model_meta(meta)
    return test


def _logging_to(run: Path) -> logging.Handler:
    handler = logging.FileHandler(runs.Run(run).log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.setLevel(logging.INFO)
    logging.getLogger("core").addHandler(handler)  # core.train and the data loaders propagate here, once
    return handler


def _resume_config(path: str, device: str | None) -> tuple[TrainConfig, Path]:
    run = Path(path)
    saved = runs.Run(run).config()
    if saved is None:
        raise StudioError(f"{run.name}: not a run folder (no readable config.json).")
    cfg = TrainConfig.from_dict(saved)
    return (replace(cfg, device=device) if device else cfg), run


def _check_resumable(run: Path) -> None:
    status = runs.Run(run).status()
    if status.get("status") == "done":
        raise StudioError(f"{run.name} has already finished; start a new run instead.")
    if status.get("status") == "running" and runs.pid_alive(status.get("pid")):
        raise StudioError(f"{run.name} is still running (process {status.get('pid')}).")


def run_training(cfg: TrainConfig, *, resume: str | None = None, stop: StopFlag | None = None) -> Path:
    """Validate, load the data, create (or reopen) the run directory and train. Returns the run path.

    User errors found before training (bad value, missing data) raise `StudioError` and leave no run
    directory behind. Errors during training mark the run `failed` with the reason and re-raise.
    Under torchrun every rank calls this; rank 0 alone checks and writes the run directory.
    """
    stop = stop or StopFlag()
    run = None
    if resume:
        cfg, run = _resume_config(resume, None if cfg.device == "auto" else cfg.device)
    cfg = cfg.resolved()
    pick_device(cfg.device)  # refuse a device that is not here before joining a group
    group = distributed.init(cfg.device)
    try:
        device = pick_device(distributed.rank_device(group, cfg.device))
        if cfg.cuda_graphs:
            from core.graphs import check_graphable

            check_graphable(device, group.world)
        if cfg.batch_size < 2 * group.world:
            raise StudioError(f"the batch size must be at least {2 * group.world} for {group.world} processes.")
        data = load_dataset(cfg.data)  # every rank, the same data

        def prepare() -> Path:
            if resume:
                _check_resumable(run)
                return run
            return runs.Run.create(cfg.runs_dir, cfg.name, config.to_record(cfg)).path

        run = distributed.share_outcome(group, prepare)
        return _train_in(run, cfg, data, device, stop=stop, resume=bool(resume), group=group)
    finally:
        distributed.finish(group)


def _train_in(run: Path, cfg: TrainConfig, data, device, *, stop, resume: bool, group) -> Path:
    main = group.main
    if main:
        runs.set_status(
            run, "running", pid=os.getpid(), epoch=0, epochs=cfg.epochs, device=str(device), processes=group.world
        )
    handler = _logging_to(run) if main else None
    try:
        method = get_method(cfg.method)
        s = method.curvature(cfg)
        log.info(
            "run %s on %s%s: method %s%s, RGA %s",
            run.name,
            device,
            f" and {group.world - 1} more processes" if group.active else "",
            cfg.method,
            method.describe(cfg),
            "on" if cfg.rga else "off",
        )
        if s is not None and s > 10:
            log.warning(
                "the KD term's curvature is s = %.3g times classic KD's; trained from scratch such a run "
                "usually collapses to a constant output (the stable default is --kd-scaling nontarget)",
                s,
            )
        log.info("data: %s", json.dumps(data.summary()))
        for reason in data.skipped:
            log.warning("skipped unreadable file: %s", reason)
        outcome = fit(cfg, run, data, device, stop=stop, resume=resume, group=group)
        if not main:
            return run
        if outcome == "done":
            test = finish(run, data, device, cfg)
            meta = runs.Run(run).model_meta()
            warning = health.chance_warning(
                test["accuracy"],
                health.majority_rate(data.test.labels),
                len(data.test.labels),
                epoch=meta.get("epoch") or cfg.epochs,
            )
            if warning and runs.add_warning(run, warning):
                log.warning("%s", warning["message"])
            runs.set_status(
                run,
                "done",
                best_epoch=meta.get("epoch"),
                **{k: meta.get("metrics", {}).get(k) for k in ("val_acc", "val_auc", "test_acc", "test_auc")},
            )
            log.info("done: test accuracy %.4f, AUC %s", test["accuracy"], test["auc"])
        else:
            runs.set_status(run, "stopped")
    except BaseException as e:
        reason = (
            "out of GPU memory; lower --batch-size"
            if isinstance(e, torch.OutOfMemoryError)
            else (str(e) or type(e).__name__)
        )
        if main:
            log.error("failed: %s\n%s", reason, traceback.format_exc())
            runs.set_status(run, "failed", error=reason)
        raise
    finally:
        if handler is not None:
            logging.getLogger("core").removeHandler(handler)
            handler.close()
    return run


config_from_args = config.from_args


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
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    log.setLevel(logging.INFO)
    stop = StopFlag()
    stop.install()
    try:
        run = run_training(config_from_args(args), resume=args.resume, stop=stop)
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
    sys.exit(main())
