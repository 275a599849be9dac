"""`python -m core.export --model RUN --out FILE.safetensors [--half]`: copy a run's best model to a file.

Writes the weights and their JSON twin (architecture, classes, normalisation, method, metrics), and the
out-of-distribution check when the model has one, for
example to ship a model with the studio. `--half` stores the weights as float16 at half the size.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from core import cli
from core.cli import MODEL_HELP
from core.errors import StudioError
from core.model import ModelSpec, atomic_write, load_model, resolve_model_path, save_model
from core.runs import CONFIG, Run
from core.trust import unfinished_run


def export_model(model_path: str | Path, out: str | Path, *, half: bool = False) -> Path:
    """Copy the model at `model_path` (run folder or model file) to `out`; returns the weights path."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise StudioError(f"{out.name}: the output must be a .safetensors file.")
    model, spec, meta = load_model(model_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    spec_fields = set(ModelSpec.__dataclass_fields__) | {"format", "num_classes", "in_channels", "normalisation"}
    extra = {k: v for k, v in meta.items() if k not in spec_fields}
    extra["weights_dtype"] = "float16" if half else "float32"
    reason = unfinished_run(model_path, meta)
    if reason:  # travels with the file: Diagnose refuses it, core.predict warns on every answer, as for the run
        extra["unfinished"] = reason
    if extra.get("ood"):  # the out-of-distribution check travels with the model
        source = resolve_model_path(model_path).with_name(extra["ood"]["file"])
        target = out.with_name(f"{out.stem}.ood.safetensors")
        atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
        extra["ood"] = {**extra["ood"], "file": target.name}
    save_model(model, spec, out, extra=extra, half=half)
    return out


def export_run(run_path: str | Path, folder: str | Path) -> list[Path]:
    """What a download of the run at `run_path` holds, written into `folder`: its model as `export_model` writes
    it (`<run>.safetensors`, `<run>.json` and `<run>.ood.safetensors`, which load anywhere as they are: in
    `core.predict --model`, or in another studio's models folder) when it has one, and its config
    (`<run>-config.json`)."""
    run = Run(Path(run_path))
    folder = Path(folder)
    files = []
    if run.has_model():
        weights = export_model(run.path, folder / f"{run.path.name}.safetensors")
        files += [
            p for p in (weights, weights.with_suffix(".json"), weights.with_suffix(".ood.safetensors")) if p.is_file()
        ]
    if (run.path / CONFIG).is_file():
        files.append(Path(shutil.copy2(run.path / CONFIG, folder / f"{run.path.name}-config.json")))
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help=MODEL_HELP)
    ap.add_argument("--out", required=True, help="output .safetensors path (its .json twin is written beside it)")
    ap.add_argument("--half", action="store_true", help="store weights as float16")
    args = ap.parse_args(argv)
    try:
        out = export_model(args.model, args.out, half=args.half)
    except StudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    cli.run(main)
