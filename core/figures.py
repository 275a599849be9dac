"""Figures for the studio and the run report (no UI): curves, confusion, reliability, heatmaps, drawn with
matplotlib for the report's PNGs; the training curves also with plotly, for the studio's live plots whose
points show their values on hover."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def distributions(classes: list[str], series: dict[str, list[float]], target: int):
    """Grouped bars: one group per class, one bar per distribution."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(classes))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, [f"{c}{' (target)' if j == target else ''}" for j, c in enumerate(classes)])
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


HEAT_SPAN = 0.05  # the least range of figures one colour bar spans


def heat_range(values: np.ndarray, least: float = HEAT_SPAN) -> tuple[float, float]:
    """The colour bar's range for a grid of figures in 0-1 (AUCs, accuracies): the figures' own range, so
    that 0.924 and 0.933 are told apart, but never narrower than `least` around their middle, so that
    differences as small as a seed's noise are not painted as far apart as chance and perfect are."""
    found = values[np.isfinite(values)]
    if not found.size:
        return 0.5, 1.0
    lo, hi = float(found.min()), float(found.max())
    if hi - lo < least:
        middle = (lo + hi) / 2
        lo, hi = middle - least / 2, middle + least / 2
        shift = max(0.0, -lo) - max(0.0, hi - 1.0)  # inside 0-1, still `least` wide
        lo, hi = lo + shift, hi + shift
    return lo, hi


def readable_on(rgba) -> str:
    """Black or white text, whichever contrasts more with the colour `rgba` (WCAG relative luminance)."""
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "black" if (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) else "white"


def heatmap(rows: list[float], cols: list[float], values: np.ndarray, *, row_label: str, col_label: str, title: str):
    """A grid of figures (a sweep's AUC per pair of temperatures): colours spread over the figures' range
    (`heat_range`), each cell's figure written in the colour that reads on it, the best cell outlined, and
    cells without a figure yet left blank."""
    from matplotlib.patches import Rectangle

    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    lo, hi = heat_range(values)
    im = ax.imshow(values, cmap="viridis", vmin=lo, vmax=hi)
    ax.set_xticks(range(len(cols)), [f"{c:g}" for c in cols])
    ax.set_yticks(range(len(rows)), [f"{r:g}" for r in rows])
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    ax.set_title(title, fontsize=10)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                color = readable_on(im.cmap(im.norm(values[i, j])))
                ax.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", color=color, fontsize=8)
    if np.isfinite(values).any():
        best = np.unravel_index(np.nanargmax(values), values.shape)
        ax.add_patch(Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    plt.close(fig)
    return fig


def method_comparison(rows: list[dict], metrics: tuple[str, ...] = ("test_acc", "test_auc", "test_ece")):
    """One panel per metric: a group per arm (a training method with its settings), a bar per RGA setting,
    mean with its std as an error bar. `rows` hold `arm` (or `method`), `rga` and
    `{metric: {"mean": m, "std": s}}`."""
    rows = [{**r, "method": r.get("arm", r.get("method"))} for r in rows]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    settings = sorted({r["rga"] for r in rows})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2))
    width = 0.8 / len(settings)
    for ax, metric in zip(np.atleast_1d(axes), metrics, strict=True):
        for i, rga in enumerate(settings):
            found = {r["method"]: r[metric] for r in rows if r["rga"] == rga and r.get(metric)}
            x = np.array([j for j, m in enumerate(methods) if m in found], dtype=float)
            means = [found[m]["mean"] for m in methods if m in found]
            stds = [found[m]["std"] or 0.0 for m in methods if m in found]
            offset = (i - (len(settings) - 1) / 2) * width
            ax.bar(x + offset, means, width, yerr=stds, capsize=3, label="with RGA" if rga else "without RGA")
        tilt = len(methods) > 5
        ax.set_xticks(range(len(methods)), methods, rotation=30 if tilt else 0, ha="right" if tilt else "center")
        ax.set_title(metric.replace("_", " "), fontsize=10)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


CHANCE_AUC = 0.5
METRIC_NAMES = {"train_loss": "training loss", "val_acc": "validation accuracy", "val_auc": "validation AUC"}


def _points(rows: list[dict], key: str) -> list[tuple[int, float]]:
    return [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]


def _chance(key: str, chance_acc: float | None) -> float | None:
    return {"val_acc": chance_acc, "val_auc": CHANCE_AUC}.get(key)


def live_curves(
    series: dict[str, list[dict]],
    keys: tuple[str, ...] = ("train_loss", "val_acc", "val_auc"),
    *,
    chance_acc: float | None = None,
):
    """`curves` as a plotly figure for the studio: the same panels, ranges and chance lines, and each
    point's run, epoch and value on hover. Each run has its own colour, dash and marker, so that runs whose
    curves coincide (the same settings and seed train alike, bit for bit) still show every line."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[METRIC_NAMES.get(k, k) for k in keys])
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    dashes = ["solid", "dash", "dot", "dashdot"]
    markers = ["circle", "square-open", "diamond-open", "triangle-up-open", "x"]
    for col, key in enumerate(keys, start=1):
        for i, (name, rows) in enumerate(series.items()):
            pts = _points(rows, key)
            if not pts:
                continue
            epochs, values = zip(*pts, strict=True)
            fig.add_scatter(
                x=list(epochs),
                y=list(values),
                mode="lines+markers",
                name=name,
                legendgroup=name,
                showlegend=col == 1,
                line={"color": colours[i % len(colours)], "dash": dashes[i % len(dashes)]},
                marker={"symbol": markers[i % len(markers)], "size": 7 + 2 * (i % 2)},
                hovertemplate=f"{name}<br>epoch %{{x}}<br>{METRIC_NAMES.get(key, key)} %{{y:.3f}}<extra></extra>",
                row=1,
                col=col,
            )
        chance = _chance(key, chance_acc)
        if chance is not None:
            fig.add_hline(
                y=chance,
                line={"dash": "dash", "color": "grey", "width": 1},
                annotation_text=f"chance {chance:.2f}",
                annotation_position="bottom left",
                annotation_font={"size": 10, "color": "grey"},
                row=1,
                col=col,
            )
        if key in ("val_acc", "val_auc"):
            fig.update_yaxes(range=[0, 1.02], row=1, col=col)
        fig.update_xaxes(title_text="epoch", tickformat="d", row=1, col=col)
    if max((len(rows) for rows in series.values()), default=0) <= 12:
        fig.update_xaxes(dtick=1)  # whole epochs; longer runs get plotly's own whole-number steps
    fig.update_layout(
        height=320,
        margin={"l": 40, "r": 10, "t": 40, "b": 40},
        hovermode="closest",
        legend={"orientation": "h", "y": -0.25},
        template="plotly_white",
    )
    return fig


def curves(
    series: dict[str, list[dict]],
    keys: tuple[str, ...] = ("train_loss", "val_acc", "val_auc"),
    *,
    chance_acc: float | None = None,
):
    """One panel per metric, one line per run, whole-number epochs. Accuracy and AUC share the range 0 to 1
    whatever the runs, so compared runs read alike, with chance marked: the majority-class rate on accuracy
    (when given) and 0.5 on AUC."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
    for ax, key in zip(np.atleast_1d(axes), keys, strict=True):
        for name, rows in series.items():
            pts = _points(rows, key)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=name)
        chance = _chance(key, chance_acc)
        if key in ("val_acc", "val_auc"):
            ax.set_ylim(0, 1.02)
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
            ax.annotate(
                f"chance {chance:.2f}",
                (0.01, chance),
                xycoords=("axes fraction", "data"),
                fontsize=7,
                color="grey",
                va="bottom",
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(METRIC_NAMES.get(key, key), fontsize=10)  # as the studio's live curves name them
        ax.set_xlabel("epoch")
    first = np.atleast_1d(axes)[0]
    if first.get_legend_handles_labels()[0]:
        first.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


def confusion(matrix: list[list[int]], classes: list[str]):
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="black", fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def reliability(record: dict, split: str = "test"):
    """Reliability diagram before and after temperature scaling: accuracy against confidence per bin, each
    point's area in proportion to the images in its bin, so that a bin of one or two images (all right or all
    wrong) is seen as the small sample it is rather than as a swing of the curve; the ECE weighs bins so."""
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    most = max(
        (b["count"] for key in ("reliability_before", "reliability_after") for b in record[split][key]), default=0
    )
    for key, label in (("reliability_before", "before"), ("reliability_after", "after")):
        bins = [b for b in record[split][key] if b["count"]]
        ece = record[split][key.replace("reliability", "ece")]
        x, y = [b["confidence"] for b in bins], [b["accuracy"] for b in bins]
        (line,) = ax.plot(x, y, linewidth=0.8, alpha=0.6, label=f"{label} (ECE {ece:.3f})")
        ax.scatter(x, y, s=[4 + 120 * b["count"] / max(most, 1) for b in bins], color=line.get_color(), alpha=0.8)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{split} split, T = {record['temperature']:.3f}", fontsize=10)
    ax.legend(fontsize=7, title="point area: images in the bin", title_fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


def roc(probs, labels, classes: list[str]):
    """One-vs-rest ROC curves, one per class (the positive class only for two classes)."""
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    shown = [1] if len(classes) == 2 else range(len(classes))
    for c in shown:
        if (labels == c).any() and (labels != c).any():
            fpr, tpr, _ = roc_curve(labels == c, probs[:, c])
            ax.plot(fpr, tpr, label=classes[c])
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


def png_data_uri(fig) -> str:
    """A figure as an inline PNG for a self-contained HTML page."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
