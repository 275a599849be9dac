"""The processes a run folder names (its trainer, the studio that claimed it): whether one is alive and is the
very process recorded, not another the system gave its pid to since (after a crash or a restart), whether it
is a trainer, and how to signal one. Linux tells these from /proc; elsewhere a live pid is taken as it is."""

from __future__ import annotations

import functools
import os
import signal
import time
from pathlib import Path

TRAINERS = {b"core.train", b"core.grid", b"core/train.py", b"core/grid.py"}  # how a trainer's command names it


def alive(pid: int | None) -> bool:
    """Whether process `pid` runs: a zombie (exited, not yet reaped by its parent) does not."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not _zombie(pid)


def started(pid: int | None) -> str | None:
    """When process `pid` started, as "<boot id>:<clock ticks since boot>": a later process given the same pid,
    in this boot or another, reads otherwise. None where it cannot be told (gone, or no /proc)."""
    if not pid:
        return None
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        boot = _boot_id()
    except OSError:
        return None
    return f"{boot}:{stat.rsplit(')', 1)[-1].split()[19]}"  # field 22, starttime, counted after the name


def same(pid: int | None, recorded: str | None) -> bool:
    """Whether the process recorded as `pid`, started at `recorded` (`started`), still runs. Where no start was
    recorded (a status written by an older version), whether a trainer runs under that pid."""
    if not alive(pid):
        return False
    if recorded is None:
        return is_trainer(pid)
    now = started(pid)
    return now is None or now == recorded


def is_trainer(pid: int) -> bool:
    """Whether live process `pid` runs core.train or core.grid (under torchrun or not): a trainer the studio may
    signal, not a program that trains inside itself (a notebook) or one that took a dead trainer's pid. True
    where /proc cannot tell."""
    for _ in range(40):
        try:
            cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
        except FileNotFoundError:
            return not Path("/proc/self").exists()  # gone meanwhile, or no /proc on this system
        except OSError:
            return True
        if cmdline:
            break
        time.sleep(0.025)  # a process in the middle of its exec reads empty for a moment
    argv = cmdline.split(b"\0")
    return any(a in TRAINERS or a.endswith((b"/core/train.py", b"/core/grid.py")) for a in argv)


@functools.cache
def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return False


def signal_group(pid: int, sig: int) -> None:
    """Signal a trainer and the processes it started (torchrun's workers): its process group when that group is a
    session of its own, as every trainer the studio starts is; else the trainer alone, since one started from a
    shell script shares the script's group, and with it perhaps the studio's own process."""
    try:
        group = os.getpgid(pid)
        if group == os.getsid(pid):
            os.killpg(group, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def sigterm_as_ctrl_c():
    """Stop this process on SIGTERM as on Ctrl-C, a KeyboardInterrupt in the main thread: `kill`, systemd,
    `docker stop` and `timeout` send SIGTERM, whose default skips every clean-up (the studio's server closing
    and its temporary images removed; a benchmark's trainers stopped, which else train on, in a process group of
    their own, after `timeout` ended their benchmark). Returns the handler it replaced."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)
