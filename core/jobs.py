"""Training jobs for the studio: each run is a `python -m core.train` subprocess in its own process group,
and a temperature grid is one `python -m core.grid` subprocess for all its runs.

A job manager keeps one queue per device and starts a queued run when its device has a free slot.
All state lives in the run directories (see core.runs), so closing the browser or restarting the app
neither stops nor loses a run: on start the manager re-queues runs that were queued, adopts trainers
that are still alive (also one launched and still loading its data, whose run still reads `queued`), and
marks runs whose trainer died as failed (they can be resumed); a trainer started elsewhere later (the command
line, another studio) is adopted when Stop is asked of its run. Stop sends
SIGTERM (the trainer finishes its step and saves `last.safetensors`), then SIGKILL after a grace
period; either way the run ends `stopped`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path

from core import config, process, runs
from core.config import TrainConfig
from core.data import split_sizes
from core.errors import StudioError
from core.graphs import training_device
from core.model import check_pretrained

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DIED = "the training process ended unexpectedly; resume the run to continue from its last checkpoint"


class JobManager:
    """Queues, starts, stops and recovers training runs under one runs directory."""

    def __init__(self, runs_dir: str | Path, *, per_device: int = 1, grace_s: float = 15.0, poll_s: float = 0.5):
        if per_device < 1:
            raise StudioError(f"runs per device must be at least 1, not {per_device}.")
        self.runs_dir = runs.make_runs_dir(runs_dir)
        self.per_device = per_device
        self.grace_s = grace_s
        self._lock = threading.RLock()
        self._queues: dict[str, deque[tuple[Path, ...]]] = {}  # per device: jobs of one run, or a grid's runs
        self._procs: dict[Path, subprocess.Popen | int] = {}  # a Popen we started, or the pid of an adopted one
        self._devices: dict[Path, str] = {}
        self._stopping: set[Path] = set()
        # what this manager writes in the runs it launches (runs.claim_launch): another studio on the same runs
        # folder, or another manager in this process, leaves them be
        self._owner = {"pid": os.getpid(), "started": process.started(os.getpid()), "manager": uuid.uuid4().hex}
        self._closed = threading.Event()
        self.recover()
        self._thread = threading.Thread(target=self._loop, args=(poll_s,), name="job-manager", daemon=True)
        self._thread.start()

    # ---- public -------------------------------------------------------------------------------------

    def submit(self, cfg: TrainConfig, *, processes: int = 1) -> Path:
        """Check the settings, create the run directory as `queued`, and queue it. Returns the run path.

        `processes` > 1 trains with torchrun: on GPUs one process per GPU (GPUs 0 .. processes-1)."""
        cfg = cfg.resolved()
        device = _device_for(cfg, processes)
        run = runs.Run.create(self.runs_dir, cfg.name, config.to_record(cfg)).path
        runs.set_status(run, "queued", epoch=0, epochs=cfg.epochs, device=device, processes=processes, pid=None)
        self._enqueue((run,), device)
        return run

    def submit_grid(self, cfgs: list[TrainConfig]) -> list[Path]:
        """Queue runs that differ only in their temperatures as one job: one process trains them all on
        one copy of the data (core.grid). Checks everything first; makes no run folder on a refusal."""
        from core.grid import check_grid, create_grid

        cfgs = [cfg.resolved() for cfg in cfgs]
        check_grid(cfgs)
        device = _device_for(cfgs[0], 1)
        made = create_grid(self.runs_dir, cfgs)
        names = [run.name for run in made]
        for cfg, run in zip(cfgs, made, strict=True):
            runs.set_status(run, "queued", epoch=0, epochs=cfg.epochs, device=device, processes=1, grid=names, pid=None)
        self._enqueue(tuple(made), device)
        return made

    def resume(self, run: str | Path) -> None:
        """Queue a stopped or failed run again; it continues from its last checkpoint."""
        run = self.find(run)
        status = runs.Run(run).status()
        if status.get("status") not in ("stopped", "failed"):
            raise StudioError(f"{run.name} is {status.get('status', 'unknown')}; only stopped or failed runs resume.")
        with self._lock:
            proc = self._procs.get(run)
            if proc is not None and any(p == proc for r, p in self._procs.items() if r != run):
                self._procs.pop(run)  # its grid's process trains the others on, and is done with this one
                self._stopping.discard(run)
        runs.set_status(run, "queued", pid=None, launched=None, claimed_by=None)  # until a trainer is launched for it
        self._enqueue((run,), status.get("device", "cpu"))  # a grid's run continues alone

    def stop(self, run: str | Path) -> None:
        """Stop a run: drop it from its queue, or SIGTERM its trainer (SIGKILL after the grace period).
        A run of a grid whose other runs still train is asked to stop alone (`Run.request_stop`): the grid's
        process stops it after its current step and trains the others on. A stopped run resumes on its own."""
        run = self.find(run)
        with self._lock:
            status = runs.Run(run).status()
            if self._unqueue(run) and not runs.launched_elsewhere(status, self._owner):
                runs.set_status(run, "stopped")  # never launched: it ends here
                return
            proc = self._procs.get(run)
            if proc is None:  # a trainer started elsewhere since this studio started (the command line, another
                proc = self._adopt_started_elsewhere(run, status)  # studio) is stopped as one adopted at start is
            if proc is None or status.get("status") in runs.FINAL:
                raise StudioError(f"{run.name} is not running.")
            members = [r for r, p in self._procs.items() if p == proc]  # the run, and its grid's others
            if any(runs.Run(r).status().get("status") not in runs.FINAL for r in members if r != run):
                runs.Run(run).request_stop()
                return
            pid = proc.pid if isinstance(proc, subprocess.Popen) else proc
            if not isinstance(proc, subprocess.Popen) and process.alive(pid) and not process.is_trainer(pid):
                raise StudioError(f"{run.name} trains inside another program (process {pid}); stop it there.")
            self._stopping.update(members)
        process.signal_group(pid, signal.SIGTERM)
        threading.Thread(target=self._kill_later, args=(run, pid), daemon=True).start()

    def status(self, run: str | Path) -> dict:
        """Status, progress and the latest metrics of a run, as the UI and the API show them."""
        run = self.find(run)
        status = runs.Run(run).status()
        rows = runs.read_metrics(run)
        out = {
            "run": run.name,
            "status": status.get("status", "unknown"),
            "epoch": len(rows),
            "epochs": status.get("epochs"),
            "device": status.get("device"),
            "latest": rows[-1] if rows else None,
            "starting": runs.is_starting(status),
        }
        if status.get("error"):
            out["error"] = status["error"]
        out["warnings"] = status.get("warnings") or []
        for key in ("best_epoch", "val_acc", "val_auc", "test_acc", "test_auc", "chance_acc", "burned_in"):
            if status.get(key) is not None:
                out[key] = status[key]
        best = None if "best_epoch" in out else runs.best_row(rows)
        if best:  # a live run: the best epoch so far, the model it has saved
            out |= {"best_epoch": best["epoch"], "val_acc": best["val_acc"], "val_auc": best.get("val_auc")}
        if rows and out["epochs"]:
            out["seconds_left"] = _seconds_left(run, status, rows) if out["status"] == "running" else 0
        return out

    def find(self, run: str | Path) -> Path:
        """A run id (folder name) -> its path under the runs directory; never a path outside it."""
        return runs.Run.find(self.runs_dir, run).path

    def wait(self, run_list: list[Path], *, timeout: float | None = None, poll_s: float = 0.5) -> dict[str, str]:
        """Block until every run in `run_list` has ended (done, failed or stopped); return name -> status.

        Raises `StudioError` when `timeout` seconds pass first (the runs keep going)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ended = {r.name: runs.Run(r).status().get("status") for r in run_list}
            with self._lock:
                live = {r.name for r in self._procs} | {r.name for q in self._queues.values() for j in q for r in j}
            if all(s in runs.FINAL for s in ended.values()) and not live & ended.keys():
                return ended
            if deadline is not None and time.monotonic() > deadline:
                pending = sorted(n for n, s in ended.items() if s not in runs.FINAL)
                raise StudioError(f"{len(pending)} run(s) still going after {timeout:.0f} s: {', '.join(pending)}.")
            time.sleep(poll_s)

    def active(self) -> list[str]:
        with self._lock:
            return sorted(r.name for r in self._procs)

    def close(self) -> None:
        """Stop scheduling. Running trainers keep running (they live in their own process groups)."""
        self._closed.set()
        self._thread.join(timeout=5)

    # ---- internals ----------------------------------------------------------------------------------

    def _unqueue(self, run: Path) -> bool:
        """Take `run` out of this manager's queues (out of its grid's job, the others staying queued); whether it
        was queued here. Called with the lock held."""
        for q in self._queues.values():
            for i, job in enumerate(q):
                if run in job:
                    rest = tuple(r for r in job if r != run)
                    if rest:
                        q[i] = rest
                    else:
                        del q[i]
                    return True
        return False

    def _adopt(self, run: Path, status: dict) -> None:
        """Follow the live trainer that `status` names as if this manager had started it for `run`. Called with
        the lock held."""
        self._procs[run] = int(status["pid"])
        self._devices[run] = status.get("device", "cpu")

    def _adopt_started_elsewhere(self, run: Path, status: dict) -> int | None:
        """Take on the live trainer of `run` (whose status is `status`) that this manager did not start or find at
        its start, with the other runs of its grid that it trains, as `recover` does; None when no trainer of it
        is alive. Called with the lock held."""
        if not runs.trainer_alive(status):
            return None
        pid = int(status["pid"])
        for name in status.get("grid") or [run.name]:
            member = self.runs_dir / name
            if member == run or (member.is_dir() and runs.Run(member).status().get("pid") == pid):
                self._adopt(member, status)
        return pid

    def _enqueue(self, job: tuple[Path, ...], device: str) -> None:
        with self._lock:
            self._queues.setdefault(device, deque()).append(job)
            for run in job:
                self._devices[run] = device

    def recover(self) -> None:
        """Rebuild the picture from the run directories (after a restart of the app)."""
        grids: dict[tuple[str, ...], list[Path]] = {}
        for run in sorted(self.runs_dir.iterdir()) if self.runs_dir.is_dir() else []:
            status = runs.Run(run).status()
            if not status:
                continue
            if runs.trainer_alive(status):  # never a process that took a dead trainer's pid since
                # a trainer at work, or launched and still loading its data (still "queued"): adopt it
                with self._lock:
                    self._adopt(run, status)
            elif status.get("status") == "queued" and runs.claimed_elsewhere(status, self._owner):
                continue  # another studio on this runs folder is launching it
            elif status.get("status") == "queued" and status.get("grid") and not runs.Run(run).last_path.exists():
                grids.setdefault(tuple(status["grid"]), []).append(run)  # queued together again
            elif status.get("status") == "queued":
                self._enqueue((run,), status.get("device", "cpu"))
            elif status.get("status") == "running":
                runs.set_status(run, "failed", error=DIED)
        for members, found in grids.items():
            job = tuple(sorted(found, key=lambda r: members.index(r.name)))  # in the grid's own order
            self._enqueue(job, runs.Run(job[0]).status().get("device", "cpu"))

    def _loop(self, poll_s: float) -> None:
        while not self._closed.wait(poll_s):
            try:
                self._reap()
                self._start_ready()
            except Exception:  # keep scheduling whatever one run did
                log.exception("job manager")

    def _reap(self) -> None:
        with self._lock:
            items = list(self._procs.items())
        for run, proc in items:
            alive = proc.poll() is None if isinstance(proc, subprocess.Popen) else process.alive(proc)
            if alive:
                continue
            with self._lock:
                self._procs.pop(run, None)
                stopping = run in self._stopping
                self._stopping.discard(run)
                requeued = any(run in job for q in self._queues.values() for job in q)
            if requeued:  # resumed before its old process was gone: its status is the queue's now
                continue
            status = runs.Run(run).status().get("status")
            if status in ("queued", "running"):  # the trainer could not write its own ending
                if stopping:
                    runs.set_status(run, "stopped")
                else:
                    runs.set_status(run, "failed", error=_last_error(run) or DIED)

    def _start_ready(self) -> None:
        with self._lock:
            trainers: dict[str, set[int]] = {}  # per device, the trainer processes (a grid's runs share one)
            for run, proc in self._procs.items():
                pid = proc.pid if isinstance(proc, subprocess.Popen) else proc
                trainers.setdefault(self._devices.get(run, "cpu"), set()).add(pid)
            for device, q in self._queues.items():
                busy = len(trainers.get(device, ()))
                while q and busy < self.per_device:
                    # what is still queued and this manager's to launch: another studio on the same runs folder
                    # may have launched it, or a run stopped on the command line be queued no more
                    job = tuple(r for r in q.popleft() if runs.claim_launch(r, self._owner))
                    if not job:
                        continue
                    proc = self._spawn(job, device)
                    for run in job:
                        self._procs[run] = proc
                        runs.note_launch(run, proc.pid)
                    busy += 1

    def _spawn(self, job: tuple[Path, ...], device: str) -> subprocess.Popen:
        run = job[0]
        processes = int(runs.Run(run).status().get("processes") or 1)
        launcher = [sys.executable]
        if processes > 1:
            launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
        if len(job) > 1:  # a grid: one process, every run prepared
            argv = [*launcher, "-m", "core.grid", "--prepared", *(str(r.resolve()) for r in job), "--device", device]
        else:  # a prepared run starts; one that trained before continues from its checkpoint
            mode = "--resume" if runs.Run(run).last_path.exists() else "--prepared"
            argv = [*launcher, "-m", "core.train", mode, str(run.resolve()), "--device", device]
        out = open(runs.Run(run).process_log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            return subprocess.Popen(
                argv,
                cwd=PROJECT_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self._threads(device)},
            )
        finally:
            out.close()

    def _threads(self, device: str) -> dict[str, str]:
        """Runs sharing the CPU split its cores between them instead of each starting one thread per core."""
        if device != "cpu" or self.per_device < 2 or "OMP_NUM_THREADS" in os.environ:
            return {}
        return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // self.per_device))}

    def _kill_later(self, run: Path, pid: int) -> None:
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline:
            if not process.alive(pid):
                return
            time.sleep(0.2)
        log.warning("run %s did not stop within %.0f s; killing it", run.name, self.grace_s)
        process.signal_group(pid, signal.SIGKILL)


def _device_for(cfg: TrainConfig, processes: int) -> str:
    """The device a new run queues for, after checking what can be checked before it exists."""
    # a GPU this machine lacks, or CUDA graphs where they cannot run: said now, not by a run that fails at its start
    device = str(training_device(cfg.device, cfg.cuda_graphs, processes))  # "auto": cuda where present, else cpu
    if cfg.data.data_path and cfg.data.dataset != "synthetic" and not Path(cfg.data.data_path).exists():
        raise StudioError(f"{Path(cfg.data.data_path).name or 'data path'}: no such file or folder.")
    split_sizes(cfg.data)  # a wrong file, one class, an empty split: said now, not by a failed run
    if cfg.pretrained:
        check_pretrained(cfg.pretrained, cfg.arch, cfg.data.image_size)
    gpus = _gpu_count()
    if processes < 1:
        raise StudioError(f"a run trains in at least one process, not {processes}.")
    if device.startswith("cuda") and processes > max(gpus, 1):
        raise StudioError(f"choose between 1 and {max(gpus, 1)} GPUs for this run.")
    if processes > 1 and cfg.batch_size < 2 * processes:
        raise StudioError(f"the batch size must be at least {2 * processes} for {processes} processes.")
    if processes > 1 and device.startswith("cuda"):
        device = "cuda"  # torchrun puts rank r on GPU r
    return device


def _seconds_left(run: Path, status: dict, rows: list[dict]) -> float:
    """Until a running run's last epoch ends, from its epochs' own times. A grid's runs take their epochs in
    turn, so each other run of its grid still training adds its epochs up to this one's last."""
    left = status["epochs"] - len(rows)

    def per_epoch(rs: list[dict]) -> float:
        return sum(r.get("seconds") or 0.0 for r in rs) / len(rs)

    seconds = per_epoch(rows) * left
    for other in [run.parent / name for name in status.get("grid") or []]:
        theirs = runs.Run(other).status() if other != run else {}
        if theirs.get("status") == "running" and theirs.get("epochs"):
            done = runs.read_metrics(other)  # none yet: the grid's runs train epochs of one size
            seconds += per_epoch(done or rows) * min(left, theirs["epochs"] - len(done))
    return seconds


def _last_error(run: Path) -> str | None:
    """The trainer's own 'error: ...' line, when it printed one before exiting."""
    try:
        lines = runs.Run(run).process_log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line[len("error: ") :] for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else None


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
