"""A one-file HTML report of a finished run: `python -m core.report --model RUN [--out report.html]`.

It holds the data and split sizes, the method and temperatures, the training curves, the test metrics
with confusion matrix and ROC curves, the reliability diagram, sample lesion maps from the test split,
the exact configuration and the software versions. Images are inlined, so the file opens anywhere.
"""

from __future__ import annotations

import argparse
import html
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from core import cli, figures, runs
from core.config import METHOD_SETTINGS
from core.dataset import burned_in_files
from core.errors import StudioError

PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "pillow",
    "pydicom",
    "python-gdcm",
    "pylibjpeg-openjpeg",
    "safetensors",
    "scikit-learn",
    "grad-cam",
)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _table(rows: list[tuple[str, object]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _fraction(value: float | None) -> str:
    """A metric as the other rows show it (four places), or n/a where it is undefined (no such images)."""
    return "n/a" if value is None else f"{value:.4f}"


def _img(fig, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{figures.png_data_uri(fig)}">'


def _state(status: dict) -> str:
    """The run's status, and for a run marked running or queued whose trainer is gone (killed, or the machine
    restarted) what the studio would mark it: the report may be written without the studio."""
    state = str(status.get("status"))
    if state in ("running", "queued") and status.get("pid") and not runs.trainer_alive(status):
        return f"{state}, but its trainer is no longer running (resume the run to continue)"
    return state


def _alerts(status: dict, meta: dict) -> list[str]:
    """The run's failure and warnings (collapse, chance), in red at the top, as the Train tab shows them: a
    report handed on must not make a flagged run look fine."""
    out = []
    if status.get("error"):
        out.append(f"<p class='alert'><b>The run {status.get('status')}:</b> {html.escape(str(status['error']))}</p>")
    warnings = status["warnings"] if "warnings" in status else meta.get("warnings")  # copied at the end
    for w in warnings or []:
        what = f"Warning ({w.get('kind')}, epoch {w.get('epoch')})"
        out.append(f"<p class='alert'><b>{html.escape(what)}:</b> {html.escape(str(w.get('message')))}</p>")
    return out


def burned_in_note(count: int) -> str:
    """Why a report shows no sample scans: `count` of its data's DICOM files say text is burned into them."""
    return (
        f"Left out: {burned_in_files(count)} (BurnedInAnnotation), which may identify a patient, and a report is "
        "made to be shared."
    )


def build_report(run: str | Path, *, samples: int = 4) -> str:
    """The report of a finished run folder, as an HTML string."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from core.augment import eval_transform
    from core.cam import compute_cam, overlay
    from core.evaluate import load_trained, score_split

    folder = runs.Run(run)
    run = folder.path
    cfg, status = folder.config(), folder.status()
    if cfg is None or not folder.has_model():
        raise StudioError(f"{run.name}: not a run folder with a trained model.")
    model, _, meta, data = load_trained(run)
    test, probs = score_split(model, meta, data.test, data.classes)
    labels, chance, c = data.test.labels.numpy(), test["chance_acc"], test["calibrated"]
    calibrated = [(f"ECE of the answers (calibrated, T = {c['temperature']:.2f})", f"{c['ece']:.4f}")] if c else []
    summary = data.summary()
    rows = runs.read_metrics(run)
    parts = [
        f"<h1>Run report: {html.escape(run.name)}</h1>",
        f"<p>Status <b>{html.escape(_state(status))}</b>; {len(rows)} of {cfg.get('epochs')} epochs "
        f"trained; the model of epoch {meta.get('epoch')}, chosen on validation AUC.</p>",
        *_alerts(status, meta),
        "<h2>Data</h2>",
        _table(
            [
                ("dataset", summary["name"]),
                ("classes", ", ".join(summary["classes"])),
                ("image size", summary["image_size"]),
                ("channels", summary["channels"]),
            ]
            + [
                (f"{s} images (per class)", f"{summary[s]['size']} ({summary[s]['per_class']})")
                for s in ("train", "val", "test")
            ]
        ),
        "<h2>Method</h2>",
        _table(
            [
                ("method", cfg["method"]),
                *[(k.replace("_", " "), cfg.get(k)) for k in METHOD_SETTINGS if cfg.get(k) is not None],
                ("RGA", cfg["rga"]),
                ("network", cfg["arch"]),
                ("optimizer", f"{cfg['optimizer']}, lr {cfg['lr']}, batch {cfg['batch_size']}"),
            ]
        ),
        "<h2>Training curves</h2>",
        _img(
            figures.curves({run.name: rows}, chance_acc=status.get("chance_acc")),
            "training curves",
        ),
        "<h2>Test metrics</h2>",
        _table(
            [
                ("accuracy", f"{test['accuracy']:.4f}"),
                ("balanced accuracy", f"{test['balanced_accuracy']:.4f}"),
                ("AUC", "n/a" if test["auc"] is None else f"{test['auc']:.4f}"),
                ("macro F1", f"{test['f1_macro']:.4f}"),
                ("ECE (uncalibrated)", f"{test['ece']:.4f}"),
                *calibrated,
                ("majority-class rate (accuracy of always answering the most common class)", f"{chance:.4f}"),
            ]
            + [
                (
                    f"{c}: sensitivity / specificity",
                    f"{_fraction(v['sensitivity'])} / {_fraction(v['specificity'])}",
                )
                for c, v in test["per_class"].items()
            ]
        ),
        _img(figures.confusion(test["confusion_matrix"], data.classes), "confusion matrix"),
        _img(figures.roc(probs, labels, data.classes), "ROC curves"),
    ]
    if meta.get("calibration"):
        parts += ["<h2>Calibration</h2>", _img(figures.reliability(meta["calibration"], "test"), "reliability diagram")]
    parts.append("<h2>Sample lesion maps (test split)</h2><div>")
    if data.burned_in:  # a report is made to be shared: no pixels that may carry a name
        parts.append(f"<p>{html.escape(burned_in_note(data.burned_in))}</p>")
    for i in range(0 if data.burned_in else min(samples, len(data.test))):
        x = data.test.images[i]
        pixels = x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()
        target = int(np.argmax(probs[i]))
        cam = compute_cam(model, eval_transform(x[None]), target=target)
        shown = Image.fromarray(overlay(pixels, cam)).resize((160, 160), Image.Resampling.NEAREST)
        fig, ax = plt.subplots(figsize=(2, 2.2))
        ax.imshow(np.asarray(shown))
        ax.set_title(f"true {data.classes[int(labels[i])]}\npredicted {data.classes[target]}", fontsize=7)
        ax.axis("off")
        fig.tight_layout()
        plt.close(fig)
        parts.append(_img(fig, f"lesion map {i + 1}"))
    parts += [
        "</div><h2>Configuration</h2>",
        f"<pre>{html.escape(json.dumps(cfg, indent=2))}</pre>",
        "<h2>Software</h2>",
        _table(
            list(versions().items()) + [("device of this report", "cpu"), ("torch threads", torch.get_num_threads())]
        ),
    ]
    style = (
        "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}table{border-collapse:collapse}"
        "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}img{margin:6px}pre{background:#f4f4f4;"
        "padding:8px;overflow:auto}.alert{background:#fde8e8;border-left:4px solid #b91c1c;padding:6px 10px}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>TSS-KD Studio report: {html.escape(run.name)}"
        f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


def write_report(run: str | Path, out: str | Path | None = None) -> Path:
    run = Path(run)
    out = Path(out) if out else runs.Run(run).report_path
    out.write_text(build_report(run), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="run folder")
    ap.add_argument("--out", default=None, help="output .html (default: RUN/report.html)")
    args = ap.parse_args(argv)
    try:
        print(write_report(args.model, args.out))
    except StudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    cli.run(main)
