"""The command line of `python -m core.train`: one option per setting of core.config, `--resume RUN`,
`--prepared RUN` and `--like RUN`, presets as defaults, and the checks that keep a resumed run on its own
settings."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from core import runs, settings
from core.config import PRESETS, DataConfig, TrainConfig
from core.errors import StudioError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default after its help; options whose default depends on others (None) say it in
    their own words instead of "(default: None)", and switches that are off unless given need none."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def get_args_parser() -> argparse.ArgumentParser:
    """The command line: one option per setting of `core.config`, and --resume, --prepared or --like."""
    ap = argparse.ArgumentParser(
        prog="python -m core.train",
        description="Train a classifier with TSS-KD (or a baseline).",
        formatter_class=HelpFormatter,
    )
    settings.add_arguments(ap)
    start = ap.add_mutually_exclusive_group()
    start.add_argument(
        "--resume", default=None, metavar="RUN", help="continue a stopped or killed run folder (its settings apply)"
    )
    start.add_argument(  # not --run: torchrun would take that for an abbreviation of its --run-path
        "--prepared",
        default=None,
        metavar="RUN",
        help="start a run folder the studio prepared (its settings apply)",
    )
    start.add_argument(
        "--like",
        default=None,
        metavar="RUN",
        help="start a new run with that run's settings; the settings given here change them",
    )
    return ap


def parse_args(argv: list[str] | None = None, ap: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """The command line (of `ap`, core.train's by default), with `--preset NAME`'s settings as defaults: flags
    given explicitly still win."""
    ap = ap or get_args_parser()
    args = ap.parse_args(argv)
    if args.preset:
        ap.set_defaults(**PRESETS[args.preset])
        args = ap.parse_args(argv)
    return args


def given_settings(argv: list[str] | None, ap: argparse.ArgumentParser | None = None) -> dict:
    """The settings named on the command line (of `ap`, core.train's by default), by field name, and nothing
    else (no defaults)."""
    ap = ap or get_args_parser()
    for action in ap._actions:  # no defaults: only what was typed reaches the namespace
        action.default = argparse.SUPPRESS
    given = vars(ap.parse_args(argv))
    for start in ("resume", "prepared", "like"):
        given.pop(start, None)
    return given


def like_config(path: str, given: dict) -> TrainConfig:
    """--like RUN: a new run with RUN's settings and the ones `given` on the command line over them, made
    in `--runs-dir` when given, else beside RUN's folder."""
    saved = runs.Run(path).required_config()
    given = dict(given)
    return settings.like(saved, given, runs_dir=given.pop("runs_dir", None) or str(Path(path).parent))


def resume_conflicts(run: str, given: dict) -> list[str]:
    """Flags given with --resume whose value differs from the run's own settings (--device may change:
    the same run can continue on another device). A resumed run keeps its settings, so these are refused."""
    saved = runs.Run(run).config()
    if not isinstance(saved, dict):
        return []  # run_training says the folder is not a run
    data_names = {f.name for f in fields(DataConfig)} - {"seed"}
    out = []
    for name, value in given.items():
        if name == "device":
            continue
        old = (saved.get("data") or {}).get(name) if name in data_names else saved.get(name)
        if value != old:
            out.append(f"--{name.replace('_', '-')} {value} (the run has {old})")
    return out


def check_prepared(path: str) -> None:
    """--prepared starts a prepared run: a folder with its config that has not trained yet."""
    run = runs.Run(path)
    if not run.exists():
        raise StudioError(f"{run.name}: not a run folder (no readable config).")
    if run.last_path.exists() or run.status().get("status") not in (None, "queued"):
        raise StudioError(f"{run.name} has started before; continue it with --resume.")
