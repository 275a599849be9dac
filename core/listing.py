"""The runs of a runs folder as one table, newest first: what the studio's Runs tab and `/list_runs` show.

    python -m core.runs [--runs-dir DIR] [--json]     # (or python -m core.listing)

Reads run folders through `core.runs` and changes nothing in them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from core import cli
from core.runs import CONFIG, RUNS_DIR, STATUS, best_row, is_starting, read_json, read_metrics

STAMP = re.compile(r"-(\d{8}-\d{6})(?:-(\d+))?$")  # <name>-YYYYmmdd-HHMMSS[-n], as create_run_dir makes them


def started(run: Path) -> tuple[str, int, float]:
    """A sort key by start time: the folder's timestamp and its -n for runs made the same second, then the time
    its config.json was written (runs of other names made the same second); a folder named otherwise sorts
    first (oldest), by that time alone."""
    try:
        written = (run / CONFIG).stat().st_mtime
    except OSError:
        written = 0.0
    m = STAMP.search(run.name)
    return (m.group(1), int(m.group(2) or 1), written) if m else ("", 0, written)


# The runs table's columns, as the studio's Runs tab and `python -m core.runs` show them (list_runs' keys)
TABLE = ("run", "status", "warnings", "method", "t_target", "t_nontarget", "kd_weight", "rga", "dataset")
TABLE += ("optimizer", "epochs", "best_val_auc", "best_val_acc", "test_acc")


def table_row(r: dict) -> list:
    """A `list_runs` summary as the table's values; a queued run whose trainer is loading its data is "starting"."""
    return ["starting" if c == "status" and r["starting"] else r[c] for c in TABLE]


def optimizer_text(cfg: dict) -> str:
    """How a run's weights were stepped, as its table shows it: "adam 0.001" (the quick preset's), "sgd 0.01"."""
    name, lr = cfg.get("optimizer") or "", cfg.get("lr")
    return f"{name} {lr:g}" if name and isinstance(lr, int | float) else name


def list_runs(runs_dir: str | Path) -> list[dict]:
    """One summary per run directory, newest first by start time: id, status, method, temperatures, best
    validation figures."""
    root = Path(runs_dir)
    out = []
    for run in sorted(root.iterdir(), key=started, reverse=True) if root.is_dir() else []:
        cfg = read_json(run / CONFIG)
        if not isinstance(cfg, dict):
            continue
        status = read_json(run / STATUS, {}) or {}
        rows = read_metrics(run)
        best = best_row(rows) or {}
        out.append(
            {
                "run": run.name,
                "status": status.get("status", "unknown"),
                "starting": is_starting(status),
                "method": cfg.get("method"),
                "t_target": cfg.get("t_target"),
                "t_nontarget": cfg.get("t_nontarget"),
                "kd_weight": cfg.get("kd_weight"),
                "rga": cfg.get("rga"),
                "dataset": (cfg.get("data") or {}).get("dataset"),
                "optimizer": optimizer_text(cfg),
                "epochs": f"{len(rows)}/{cfg.get('epochs')}",
                "best_val_auc": best.get("val_auc"),
                "best_val_acc": best.get("val_acc"),
                "test_acc": status.get("test_acc"),
                "test_auc": status.get("test_auc"),
                "warnings": ", ".join(
                    f"{w.get('kind')} (epoch {w.get('epoch')})" for w in status.get("warnings") or []
                ),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m core.runs`: the runs of a runs folder as the Runs tab lists them; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m core.runs", description="List a runs folder's runs, newest first.")
    ap.add_argument("--runs-dir", default=RUNS_DIR, help="the runs folder (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="every field of each run, as JSON")
    args = ap.parse_args(argv)
    if not Path(args.runs_dir).is_dir():
        print(f"error: {args.runs_dir}: no such runs folder.", file=sys.stderr)
        return 2
    found = list_runs(args.runs_dir)
    if args.json or not found:
        print(json.dumps(found, indent=2) if args.json else f"no runs in {args.runs_dir} yet.")
        return 0
    shown = [list(TABLE)] + [
        ["" if v is None else f"{round(v, 3):g}" if isinstance(v, float) else str(v) for v in table_row(r)]
        for r in found
    ]
    wide = [max(len(row[i]) for row in shown) for i in range(len(TABLE))]
    print("\n".join("  ".join(v.ljust(w) for v, w in zip(row, wide, strict=True)).rstrip() for row in shown))
    return 0


if __name__ == "__main__":
    cli.run(main)
