"""The shape every `python -m core.X --model RUN_OR_FILE` command shares: parse, act, print JSON, and a
user's mistake as one `error:` line with exit status 2 instead of a traceback."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from core.errors import StudioError

MODEL_HELP = "run folder, model .safetensors file, or 'demo' (the shipped demo model)"


def model_command(prog: str, doc: str, action: Callable[[str], object], show: Callable[[object], object], argv) -> int:
    """Run `action(model)` for `--model`; print `show(result)` as JSON. Returns the exit status."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    ap.add_argument("--model", required=True, help=MODEL_HELP)
    args = ap.parse_args(argv)
    try:
        result = action(args.model)
    except StudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(show(result), indent=2))
    return 0


def run(main: Callable[[], int | None]) -> NoReturn:
    """`sys.exit(main())` for a command whose output may go to a reader that stops early (`| head`, a closed
    pager): the rest of the output is dropped and the command ends with status 141, as a tool ended by SIGPIPE
    does, instead of a traceback. What the command wrote to files is whole by then (they are written first)."""
    try:
        status = main()
        sys.stdout.flush()  # here, not at exit, where a closed reader would be reported as an ignored error
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        sys.exit(128 + signal.SIGPIPE)
    sys.exit(status)
