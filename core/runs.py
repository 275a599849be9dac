"""Run directories: created once, never overwritten, with status, config and metrics files others can read.

Layout of ``RUNS_DIR/<name>-<YYYYmmdd-HHMMSS>/``: ``config.json``, ``status.json``
(``queued|running|done|failed|stopped``), ``metrics.jsonl`` (one object per epoch), ``train.log``,
``model.safetensors`` + ``model.json`` (best on validation), ``last.safetensors`` (resume point).
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: status updates are not serialised between processes
    fcntl = None

from core import process
from core.errors import StudioError

RUNS_DIR = "runs"  # where run folders are made unless told otherwise (TrainConfig.runs_dir's default)
STATUSES = ("queued", "running", "done", "failed", "stopped")
# The files of a run folder. No code outside this module names them: it asks a `Run`.
CONFIG, STATUS, METRICS, LOG = "config.json", "status.json", "metrics.jsonl", "train.log"
MODEL, MODEL_META, LAST, REPORT = "model.safetensors", "model.json", "last.safetensors", "report.html"
PROCESS_LOG = "process.log"  # the trainer process's own output, kept by the job manager
STOP_REQUEST = "stop.request"  # asks a grid's process to stop this one run (core.grid); removed once it has
FINAL = ("done", "failed", "stopped")  # a run in one of these has no process working on it


def safe_name(name: str) -> str:
    """Letters, digits, '.', '_' and '-' only, so a run name cannot climb out of the runs folder."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    return cleaned[:64] or "run"


def make_runs_dir(runs_dir: str | Path) -> Path:
    """The runs folder, made readable by this user alone (0700) when it does not exist yet: a run holds a
    model trained on patients' scans. A folder that exists keeps the mode its owner gave it; the files in it
    follow the umask, as every file the studio writes does."""
    root = Path(runs_dir)
    if not root.is_dir():
        root.parent.mkdir(parents=True, exist_ok=True)
        root.mkdir(mode=0o700, exist_ok=True)
    return root


def create_run_dir(runs_dir: str | Path, name: str) -> Path:
    """Make a new, empty run directory; never reuse one that exists."""
    try:
        root = make_runs_dir(runs_dir)
    except OSError as e:
        raise StudioError(f"cannot create the runs folder {runs_dir} ({e.strerror}).") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{safe_name(name)}-{stamp}"
    for n in range(1, 1000):
        path = root / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise StudioError(f"could not find a free run folder name under {root}.")


def write_json(path: Path, obj) -> None:
    """Write JSON atomically: readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


@contextmanager
def status_lock(run: Path):
    """Hold an exclusive lock on the run folder while status.json is read, changed and written back, so
    that the studio's job manager and a trainer process never undo each other's update."""
    try:
        fd = os.open(run, os.O_RDONLY)
    except OSError:  # no folder: the write that follows says so
        yield
        return
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


def set_status(run: Path, status: str, **fields) -> dict:
    """Update status.json, keeping fields written earlier (e.g. the pid) unless replaced."""
    if status not in STATUSES:
        raise ValueError(status)
    if "pid" in fields and "pid_started" not in fields:  # which process it is, not only its number
        fields["pid_started"] = process.started(fields["pid"])
    with status_lock(run):
        current = read_json(run / STATUS, {}) or {}
        current.update(fields, status=status, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        if status != "failed":
            current.pop("error", None)
        write_json(run / STATUS, current)
    return current


def note_launch(run: Path, pid: int) -> bool:
    """The job manager started process `pid` for this queued run: record it (as `pid`, with `launched`), so
    that a studio restarted while the trainer is still loading its data adopts it instead of starting a
    second one. False, changing nothing, when the trainer has already moved the run on."""
    with status_lock(run):
        current = read_json(run / STATUS, {}) or {}
        if current.get("status") != "queued":
            return False
        current.update(pid=pid, pid_started=process.started(pid), launched=time.strftime("%Y-%m-%dT%H:%M:%S"))
        current.pop("claimed_by", None)  # from here on its live trainer says whose it is (`trainer_alive`)
        write_json(run / STATUS, current)
    return True


def claim_launch(run: Path, owner: dict) -> bool:
    """Claim a queued run for the job manager `owner` ({"pid": its process, "manager": its id}) under the status
    lock, before it launches a trainer for it. False, changing nothing, when the run is no longer queued or is
    another's to launch (`launched_elsewhere`): two studios on one runs folder each queue the queued runs they
    find, and only one may launch each (the other's trainer would be refused, and its manager would mark the
    run failed while the first one's trains it)."""
    with status_lock(run):
        current = read_json(run / STATUS, {}) or {}
        if current.get("status") != "queued" or launched_elsewhere(current, owner):
            return False
        current["claimed_by"] = owner
        write_json(run / STATUS, current)
    return True


def claimed_elsewhere(status: dict, owner: dict) -> bool:
    """Whether another live job manager has claimed this queued run to launch it (`claim_launch`); its claim
    gives way to the trainer's pid once launched (`note_launch`)."""
    claimer = status.get("claimed_by") or {}
    return claimer.get("manager") not in (None, owner["manager"]) and process.same(
        claimer.get("pid"), claimer.get("started")
    )


def launched_elsewhere(status: dict, owner: dict) -> bool:
    """Whether a queued run is another live job manager's to launch or has a live trainer."""
    return claimed_elsewhere(status, owner) or trainer_alive(status)


def is_starting(status: dict) -> bool:
    """A queued run whose trainer the job manager has launched (`note_launch`): it is loading its data."""
    return status.get("status") == "queued" and bool(status.get("launched"))


def add_warning(run: Path, warning: dict) -> bool:
    """Add `{"kind", "epoch", "message"}` to status.json's `warnings` unless one of that kind is there;
    True when it was added."""
    with status_lock(run):
        current = read_json(run / STATUS, {}) or {}
        warnings = list(current.get("warnings") or [])
        if any(w.get("kind") == warning["kind"] for w in warnings):
            return False
        current["warnings"] = [*warnings, warning]
        write_json(run / STATUS, current)
    return True


def append_metrics(run: Path, row: dict) -> None:
    with open(run / METRICS, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run: Path) -> list[dict]:
    rows = []
    try:
        with open(run / METRICS) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        break  # a line cut short by a crash ends the record
    except OSError:
        pass
    return rows


def truncate_metrics(run: Path, last_epoch: int) -> None:
    """Drop rows after `last_epoch` (written after the last checkpoint, by a run that then died)."""
    rows = [r for r in read_metrics(run) if r.get("epoch", 0) <= last_epoch]
    tmp = run / ".metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, run / METRICS)


def selection_score(row: dict) -> float:
    """What a run keeps its best model by: an epoch's validation AUC, its validation accuracy without AUC."""
    return row["val_auc"] if row.get("val_auc") is not None else row["val_acc"]


def best_row(rows: list[dict]) -> dict | None:
    """The epoch whose model the run keeps (the first of equals, as the trainer saves it); None before any."""
    best = None
    for row in rows:
        if row.get("val_acc") is not None and (best is None or selection_score(row) > selection_score(best)):
            best = row
    return best


def trainer_alive(status: dict) -> bool:
    """Whether a trainer process works on the run: marked running, or queued (launched and still loading its
    data), and the very process recorded still runs (`process.same`). One marked so whose process is gone was
    killed, or the machine restarted, even where another process has its pid since."""
    return status.get("status") in ("queued", "running") and process.same(status.get("pid"), status.get("pid_started"))


def delete_run(run: Path) -> None:
    """Remove a finished, failed or stopped run directory (never one that is queued or running)."""
    import shutil

    status = (read_json(run / STATUS, {}) or {}).get("status")
    if status in ("queued", "running"):
        raise StudioError(f"{run.name} is {status}; stop it before deleting it.")
    shutil.rmtree(run)


class RunFile:
    """A file of a run folder as a read-only attribute of `Run`: the folder's path joined with the name."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, run: Run | None, owner=None):
        return self if run is None else run.path / self.name


class Run:
    """One run folder and the files in it: the only code that knows their names and layout."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Run) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, runs_dir: str | Path, name: str, config: dict) -> Run:
        """The one place a run folder is made: a new folder (never an existing one) with its config."""
        run = cls(create_run_dir(runs_dir, name))
        write_json(run.path / CONFIG, config)
        return run

    @classmethod
    def find(cls, runs_dir: str | Path, run_id: str | Path) -> Run:
        """A run id (folder name) -> its run under `runs_dir`; never a path outside it."""
        name = Path(str(run_id)).name
        run = cls(Path(runs_dir) / name)
        if not name or name in (".", "..") or not run.exists():
            raise StudioError(f"no run named '{name}'.")
        return run

    def exists(self) -> bool:
        return (self.path / CONFIG).is_file()

    def config(self) -> dict | None:
        cfg = read_json(self.path / CONFIG)
        return cfg if isinstance(cfg, dict) else None

    def required_config(self) -> dict:
        """config.json as a dict, or a `StudioError` saying the folder is no run (--resume and --like name one)."""
        cfg = self.config()
        if cfg is None:
            raise StudioError(f"{self.name}: not a run folder (no readable config.json).")
        return cfg

    def status(self) -> dict:
        """status.json as a dict; {} before it is written or when unreadable."""
        status = read_json(self.path / STATUS, {})
        return status if isinstance(status, dict) else {}

    def set_status(self, status: str, **fields) -> dict:
        return set_status(self.path, status, **fields)

    def add_warning(self, warning: dict) -> bool:
        return add_warning(self.path, warning)

    def metrics(self) -> list[dict]:
        return read_metrics(self.path)

    # The run's files as paths: run.log_path, run.model_path, ...
    log_path = RunFile(LOG)
    process_log_path = RunFile(PROCESS_LOG)  # the trainer process's stdout and stderr
    model_path = RunFile(MODEL)
    last_path = RunFile(LAST)  # the resume point: model, optimizer, generators and position in the epoch
    report_path = RunFile(REPORT)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def has_model(self) -> bool:
        return self.model_path.is_file()

    def unfinished(self) -> str | None:
        """Why this run's model is not ready for scans yet, in words; None once the run is done. A run saves
        its model at each better epoch while it trains, but calibrates it and fits its out-of-distribution
        check only when it ends, so until then its answers are neither calibrated nor checked."""
        s = self.status()
        if s.get("status") == "done":
            return None
        trained = f", {s['epoch']} of {s['epochs']} epochs trained" if s.get("epochs") else ""
        return (
            f"run {self.name} has not finished ({s.get('status') or 'no status'}{trained}): its model is "
            "calibrated and checked against its training data only when the run ends"
        )

    def model_meta(self) -> dict:
        """model.json (what the best model is and how it scored); {} before there is a model."""
        meta = read_json(self.path / MODEL_META, {})
        return meta if isinstance(meta, dict) else {}

    def write_model_meta(self, meta: dict) -> None:
        write_json(self.path / MODEL_META, meta)

    def request_stop(self) -> None:
        """Ask the process training this run among others (a grid) to stop this run alone, after its current
        step; the others go on."""
        (self.path / STOP_REQUEST).touch()

    def stop_requested(self) -> bool:
        return (self.path / STOP_REQUEST).is_file()

    def clear_stop_request(self) -> None:
        (self.path / STOP_REQUEST).unlink(missing_ok=True)

    def delete(self) -> None:
        delete_run(self.path)


if __name__ == "__main__":  # `python -m core.runs` lists the runs: core.listing's command
    from core import cli
    from core.listing import main

    cli.run(main)
