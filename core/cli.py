"""The shape every `python -m core.X --model RUN_OR_FILE` command shares: parse, act, print JSON, and a
user's mistake as one `error:` line with exit status 2 instead of a traceback."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

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
