"""Training a run, an epoch at a time, and its end: `Fit` strings core.engine's steps into epochs, keeps the
best model and the resume checkpoint (core.checkpoint) and watches the run's health; `conclude` then
scores the best model on the test split (`finish`: test metrics, calibration, out-of-distribution check)
and records how the run ended. `core.train` drives one run this way, `core.grid` several in one process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import traceback
from pathlib import Path

import torch

from core import calibration, checkpoint, config, distributed, engine, health, ood, runs
from core.config import TrainConfig
from core.dataset import Dataset, burned_in_files
from core.device import precision
from core.engine import StopFlag
from core.errors import StudioError
from core.evaluate import classification_metrics
from core.losses import kd_warmup_factor, ps_kd_alpha
from core.methods import get_method
from core.model import ModelSpec, save_model

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


class Fit:
    """One run's training, an epoch at a time: `epoch()` trains and validates the next epoch and returns
    None, or the run's end ('done' or 'stopped'). `to_end` drives one; `core.grid` drives several in one
    process on the same data, each exactly as it would train alone. Only rank 0 writes files."""

    def __init__(
        self,
        cfg: TrainConfig,
        run: Path,
        data: Dataset,
        device: torch.device,
        *,
        stop: StopFlag,
        resume: bool,
        group: distributed.Group | None = None,
    ):
        group = group or distributed.Group()
        self.cfg, self.run, self.device, self.stop, self.group = cfg, run, device, stop, group
        amp, why = precision(device, cfg.amp)
        log.info("precision: %s", why)
        self.amp = amp
        self.folder = folder = runs.Run(run)
        if group.main:
            folder.set_status(
                "running",
                precision={"autocast": str(amp).removeprefix("torch.") if amp else None, "why": why},
                # DICOM files that say text is burned into their pixels: the studio says so while the run trains
                **({"burned_in": data.burned_in} if data.burned_in else {}),
            )
        self.spec = ModelSpec(
            arch=cfg.arch,
            classes=list(data.classes),
            image_size=data.image_size,
            channels=data.channels,
            resize=cfg.data.resize,
        )
        self.data = data = engine.place(data, device)
        train = data.train
        graphs = cfg.cuda_graphs is not False and train.images.is_cuda and group.world == 1
        if cfg.cuda_graphs and not graphs:
            log.warning("CUDA graphs off: the training data is not in GPU memory, so batches come from the host")
        if device.type == "cuda":
            log.info("CUDA graphs %s", "on: each batch size is captured once, then replayed" if graphs else "off")
        state, sampler = engine.new_state(cfg, self.spec, train, device, graphs=graphs)
        self.state = state
        state.group = group
        if resume and folder.last_path.is_file():
            checkpoint.load_last(folder.last_path, state)
            if not group.main:
                state.sums.zero_()  # rank 0 carries the whole group's partial sums of an interrupted epoch
            log.info("resumed at epoch %d, step %d", state.epoch + 1, state.step)
        self.fresh = state.epoch == 0 and state.step == 0  # trains from its first step in this process
        state.net = distributed.wrap(state.model, group, device)
        self.history = []
        self.best_val = None  # the best epoch's float32 validation pass, for `conclude` (None: it makes one)
        if group.main:
            runs.truncate_metrics(run, state.epoch)
            self.history = runs.read_metrics(run)
        self.majority = health.majority_rate(data.val.labels)
        self.step = engine.make_stepper(
            state, cfg, cfg.augment(data.image_size), train, amp=amp, sampler=sampler, graphs=graphs
        )
        self.slices = engine.batches_per_epoch(len(train), cfg.batch_size, ranks=group.world)
        state.model.train()

    @property
    def finished(self) -> bool:
        return self.state.epoch >= self.cfg.epochs

    def epoch(self) -> str | None:
        """Train and validate the next epoch; None to go on, else the run's end: 'done' or 'stopped'."""
        cfg, state, device, group, folder = self.cfg, self.state, self.device, self.group, self.folder
        train = self.data.train
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
            self.step,
            self.slices,
            order,
            cfg,
            alpha=ps_kd_alpha(epoch, cfg.epochs, alpha_final=cfg.ps_alpha),
            warm=warm,
            stop=self.stop,
        )
        if stopping and state.step < len(self.slices):
            distributed.sum_(group, state.sums)
            if group.main:
                checkpoint.save_last(folder.last_path, state)
            log.info(
                "stopped at epoch %d, step %d/%d; resume with --resume %s",
                epoch + 1,
                state.step,
                len(self.slices),
                self.run,
            )
            return "stopped"
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t0
        distributed.sum_(group, state.sums)
        context = {  # what a failure for divergence names
            "epoch": epoch + 1,
            "lr": cfg.lr,
            "kd_weight": cfg.kd_weight if "kd_weight" in get_method(cfg.method).uses else None,
        }
        # every rank sees the same sums, so all of them stop here together
        health.check_finite(dict(zip(engine.SUMS, state.sums.tolist(), strict=True)), state.model, **context)
        if group.main:  # rank 0 validates and writes; the others go on to the next epoch
            seen = state.sums[engine.SUMS.index("seen")].item() - seen_before
            try:
                val, val_pass = engine.validate(state.model, self.data, cfg, self.amp)
            except health.Diverged as e:  # finite weights whose outputs overflow
                raise health.diverged(str(e), **context) from None
            row = engine.epoch_row(state, cfg, lr=lr, warm=warm, val=val, images_per_s=seen / max(train_seconds, 1e-9))
            row["train_images"] = int(seen)
            if device.type == "cuda":
                row["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            if _keep_best(folder, state, cfg, self.spec, row):
                self.best_val = val_pass
        state.epoch, state.step = epoch + 1, 0
        if group.main:
            checkpoint.save_last(folder.last_path, state)  # before the metrics: a resume truncates to it
            row["seconds"] = time.perf_counter() - t0  # the whole epoch: training, validation, the models saved
            _report(folder, cfg, row, self.history, self.majority, len(self.data.val.labels))
        if stopping:
            return "stopped" if not self.finished else "done"
        return "done" if self.finished else None

    def to_end(self) -> str:
        """Train the remaining epochs; return how the run ended ('done' or 'stopped')."""
        outcome = "done" if self.finished else None
        while outcome is None:
            outcome = self.epoch()
        return outcome


def _keep_best(folder: runs.Run, state, cfg: TrainConfig, spec: ModelSpec, row: dict) -> bool:
    """Save the model when the epoch is the best so far, by val AUC (val accuracy without AUC); True if saved."""
    score = runs.selection_score(row)
    if score <= state.best_score:
        return False
    state.best_score, state.best_epoch = score, row["epoch"]
    metrics = {"val_acc": row["val_acc"], "val_auc": row["val_auc"]}
    save_model(state.model, spec, folder.model_path, extra=model_extra(cfg, folder.path, row["epoch"], metrics))
    return True


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
    advice = health.collapse_advice(config.applies(cfg.method), cfg.kd_scaling)
    warning = health.collapse_warning(history, majority, n_val, advice=advice)
    if warning is None:
        return
    if runs.add_warning(run, warning):
        log.warning("%s (epoch %d)", warning["message"], warning["epoch"])
    if cfg.stop_on_collapse:
        raise CollapseError(f"stopped on collapse at epoch {warning['epoch']}: {warning['message']}")


def finish(
    run: Path, data: Dataset, device: torch.device, cfg: TrainConfig, *, best_val: dict | None = None
) -> tuple[dict, dict]:
    """Score the best checkpoint on the test split, fit its calibration on the validation split and its
    out-of-distribution check on the training split (its detector file is written beside the model); return
    the test metrics (uncalibrated) and model.json's record with all three, for `conclude` to write. One
    float32 pass over each of val and test serves all three; `best_val`, the training's own float32 pass of
    the best model over val (`Fit.best_val`), is that pass already made."""
    from core.model import load_model

    model, _, meta = load_model(run, device=device)
    splits = {"val": data.val, "test": data.test}
    passes = {"val": best_val} if best_val is not None else {}
    for k, v in splits.items():
        if k not in passes:
            passes[k] = ood.features(model, v.images, batch_size=cfg.eval_batch_size)
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
    return test, meta


def conclude(
    run: Path, data: Dataset, device: torch.device, cfg: TrainConfig, outcome: str, *, best_val: dict | None = None
) -> None:
    """The end of a run that trained to `outcome`: a finished one is scored (`finish`, given the training's
    `best_val` pass), checked against chance and marked done with its figures; a stopped one is marked stopped."""
    if outcome != "done":
        runs.set_status(run, "stopped")
        return
    test, meta = finish(run, data, device, cfg, best_val=best_val)
    warning = health.chance_warning(
        test["accuracy"],
        health.majority_rate(data.test.labels),
        len(data.test.labels),
        epoch=meta.get("epoch") or cfg.epochs,
    )
    if warning and runs.add_warning(run, warning):
        log.warning("%s", warning["message"])
    warnings = runs.Run(run).status().get("warnings")
    if warnings:  # in model.json too, so that they travel with the model (export, Diagnose, core.predict)
        meta["warnings"] = warnings
    runs.Run(run).write_model_meta(meta)  # once, with the test metrics, calibration, OOD check and warnings
    runs.set_status(
        run,
        "done",
        best_epoch=meta.get("epoch"),
        **{k: meta.get("metrics", {}).get(k) for k in ("val_acc", "val_auc", "test_acc", "test_auc")},
    )
    auc = "n/a (one class in the test split)" if test["auc"] is None else f"{test['auc']:.4f}"
    log.info("done: test accuracy %.4f, AUC %s", test["accuracy"], auc)


def console_log() -> None:
    """What the trainer logs, on the terminal too (plain lines, for the command-line entry points)."""
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    log.setLevel(logging.INFO)


@contextlib.contextmanager
def run_log(run: Path):
    """While inside, what core logs also goes to the run's train.log."""
    handler = logging.FileHandler(runs.Run(run).log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.setLevel(logging.INFO)
    logging.getLogger("core").addHandler(handler)  # core.train and the data loaders propagate here, once
    try:
        yield
    finally:
        logging.getLogger("core").removeHandler(handler)
        handler.close()


def announce(run: Path, cfg: TrainConfig, data: Dataset, device: torch.device, group: distributed.Group) -> None:
    """The first lines of a run's log: what trains how, on what data, and a warning for a setting that
    usually collapses."""
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
    share = config.warmup_shortfall(cfg)
    if share is not None:
        log.warning(
            "the KD warm-up (%d epochs) is longer than the run (%d): the KD weight reaches only %.0f%% of its "
            "value, in the last epoch (--kd-warmup 0 gives it full weight from the start)",
            cfg.kd_warmup,
            cfg.epochs,
            100 * share,
        )
    log.info("data: %s", json.dumps(data.summary()))
    if data.burned_in:
        log.warning(
            "%s (BurnedInAnnotation): it may identify a patient, and a model can learn the text instead of the anatomy",
            burned_in_files(data.burned_in),
        )
    for reason in data.skipped:
        log.warning("skipped unreadable file: %s", reason)


def record_failure(run: Path, e: BaseException) -> None:
    """A run that raised: the reason in its log (with the traceback) and its status `failed`."""
    reason = (
        "out of GPU memory; lower --batch-size"
        if isinstance(e, torch.OutOfMemoryError)
        else (str(e) or type(e).__name__)
    )
    log.error("failed: %s\n%s", reason, traceback.format_exc())
    runs.set_status(run, "failed", error=reason)
