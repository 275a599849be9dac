"""Curves people read: whole-number epochs, one accuracy range for compared runs, chance marked."""

import pytest

from core import figures


def rows(accs):
    return [
        {"epoch": i + 1, "train_loss": 1 / (i + 1), "val_acc": a, "val_auc": 0.5 + a / 2} for i, a in enumerate(accs)
    ]


@pytest.mark.parametrize("chance", [0.25, None])
def test_curves_mark_chance_share_the_range_and_count_whole_epochs(chance):
    fig = figures.curves({"a": rows([0.3, 0.6, 0.8]), "b": rows([0.26, 0.27])}, chance_acc=chance)
    loss, acc, auc = fig.axes
    assert acc.get_ylim() == auc.get_ylim() == (0, 1.02)  # not fitted to these runs' values
    for ax in fig.axes:
        assert all(float(t).is_integer() for t in ax.get_xticks())
    dashed = {
        ax.get_title(): [line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == "--"] for ax in fig.axes
    }
    assert dashed["validation AUC"] == [0.5] and dashed["training loss"] == []  # named as the studio names them
    assert dashed["validation accuracy"] == ([chance] if chance else [])
    assert [line.get_label() for line in acc.lines if line.get_linestyle() != "--"] == ["a", "b"]


@pytest.mark.parametrize("chance", [0.25, None])
def test_live_curves_show_values_on_hover_with_the_same_ranges_and_chance(chance):
    """The studio's curves (plotly): one line per run and metric, whole epochs, accuracy and AUC on 0-1,
    chance marked, and each point's run, epoch and value in its hover text."""
    fig = figures.live_curves({"a": rows([0.3, 0.6, 0.8]), "b": rows([0.26, 0.27])}, chance_acc=chance)
    lines = {(t.name, t.xaxis): t for t in fig.data}
    assert sorted({name for name, _ in lines}) == ["a", "b"] and len(fig.data) == 6
    acc = lines[("a", "x2")]
    assert list(acc.x) == [1, 2, 3] and list(acc.y) == [0.3, 0.6, 0.8]
    assert "epoch %{x}" in acc.hovertemplate and "validation accuracy %{y:.3f}" in acc.hovertemplate
    assert acc.hovertemplate.startswith("a<br>")
    layout = fig.layout
    assert list(layout.yaxis2.range) == list(layout.yaxis3.range) == [0, 1.02] and layout.yaxis.range is None
    assert layout.xaxis.dtick == 1 and layout.xaxis.tickformat == "d"
    dashed = sorted(round(shape.y0, 3) for shape in layout.shapes if shape.line.dash == "dash")
    assert dashed == sorted([0.5] + ([chance] if chance else []))
    assert all(t.showlegend == (t.xaxis == "x") for t in fig.data)  # one legend entry per run


@pytest.mark.parametrize("n", [2, 5])
def test_runs_with_identical_curves_each_still_show_a_line_of_their_own(n):
    """A sweep's run at the default temperatures trains exactly as a quick run of the same seed: compared,
    their curves coincide, and the last drawn would hide the others if all were plain solid lines."""
    same = rows([0.3, 0.6, 0.8])
    fig = figures.live_curves({f"run{i}": same for i in range(n)})
    for axis in ("x", "x2", "x3"):
        traces = [t for t in fig.data if t.xaxis == axis]
        assert len(traces) == n and len({tuple(t.y) for t in traces}) == 1
        styles = [(t.line.color, t.line.dash, t.marker.symbol) for t in traces]
        assert len({s[1:] for s in styles}) == n and len({s[0] for s in styles}) == n  # dash and marker, colour


def test_a_reliability_bin_of_one_image_is_drawn_as_small_as_it_is():
    """On a test split of 200, a bin with one wrong answer reads as accuracy 0; its point's area says how
    little it holds, beside the bins that hold most images. Empty bins are not drawn."""
    import numpy as np

    from core.evaluate import reliability_bins

    conf = np.r_[np.full(120, 0.35), np.full(79, 0.45), 0.62]  # 120 and 79 images, and one alone
    probs = np.stack([conf, *[(1 - conf) / 3] * 3], 1)  # class 0 of four predicted at `conf`
    labels = np.r_[np.zeros(40), np.ones(80), np.zeros(36), np.ones(43), 1].astype(int)  # the lone one wrong
    bins = reliability_bins(probs, labels)
    record = {"temperature": 1.0, "test": {}}
    for when in ("before", "after"):
        record["test"] |= {f"reliability_{when}": bins, f"ece_{when}": 0.1}
    fig = figures.reliability(record)
    (ax,) = fig.axes
    points = ax.collections[0]  # the "before" points
    xy, sizes = points.get_offsets(), points.get_sizes()
    assert len(xy) == 3 == sum(b["count"] > 0 for b in bins)
    alone = int(np.argmin(np.abs(xy[:, 0] - 0.62)))
    assert xy[alone, 1] == 0.0 and sizes[alone] < sizes.max() / 20  # the lone wrong answer: a dot
    assert sizes.max() == sizes[int(np.argmin(np.abs(xy[:, 0] - 0.35)))]  # the fullest bin: the largest point
    assert "images in the bin" in ax.get_legend().get_title().get_text()


def contrast(rgba, name: str) -> float:
    """WCAG contrast ratio of a colour against black or white text."""
    from matplotlib.colors import to_rgb

    def luminance(rgb):
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    a, b = sorted([luminance(rgba[:3]), luminance(to_rgb(name))])
    return (b + 0.05) / (a + 0.05)


def _cells(fig):
    """(heatmap axes, image, {cell: text}, outlined cells) of `figures.heatmap`'s figure."""
    ax = fig.axes[0]
    (im,) = ax.get_images()
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    outlined = [(round(p.get_y() + 0.5), round(p.get_x() + 0.5)) for p in ax.patches if not p.get_fill()]
    return ax, im, texts, outlined


@pytest.mark.parametrize(
    "grid, best, span",
    [
        ([[0.933, 0.924], [0.926, 0.925]], (0, 0), (0.9035, 0.9535)),  # a sweep's cells a seed's noise apart
        ([[0.55, 0.97], [0.81, 0.62]], (0, 1), (0.55, 0.97)),  # far apart: the figures' own range
        ([[0.995, 1.0], [0.999, 0.998]], (0, 1), (0.95, 1.0)),  # at the top: still 0.05 wide, inside 0-1
        ([[0.61, float("nan")], [float("nan"), 0.6]], (0, 0), (0.58, 0.63)),  # cells not done yet
    ],
)
def test_a_heatmap_spreads_its_colours_over_its_figures_and_outlines_the_best(grid, best, span):
    """A sweep of close AUCs (0.924-0.933) had all its cells one green on a fixed 0.5-1.0 bar, their white
    figures hard to read on it: the bar now spans the figures (never under 0.05), each figure is written
    in the colour that reads on its cell, and the best cell is outlined."""
    import numpy as np

    values = np.array(grid)
    fig = figures.heatmap([2, 4], [0.4, 4], values, row_label="t_target", col_label="t_nontarget", title="AUC")
    _, im, texts, outlined = _cells(fig)
    assert im.norm.vmin == pytest.approx(span[0]) and im.norm.vmax == pytest.approx(span[1])
    assert outlined == [best]
    finite = {(i, j) for i in range(2) for j in range(2) if np.isfinite(values[i, j])}
    assert set(texts) == finite  # a cell without a figure yet stays blank
    for (i, j), text in texts.items():
        assert text.get_text() == f"{values[i, j]:.3f}"
        assert contrast(im.cmap(im.norm(values[i, j])), text.get_color()) >= 4.5  # WCAG AA for text
    shades = [im.norm(v) for v in values[np.isfinite(values)]]
    spread = np.nanmax(values) - np.nanmin(values)
    assert max(shades) - min(shades) >= (0.15 if spread >= 0.009 else 0.0)  # 0.924 and 0.933 told apart


def test_a_heatmap_with_no_figures_yet_draws_an_empty_grid():
    import numpy as np

    fig = figures.heatmap([2], [0.4, 4], np.full((1, 2), np.nan), row_label="r", col_label="c", title="AUC")
    _, im, texts, outlined = _cells(fig)
    assert (im.norm.vmin, im.norm.vmax) == (0.5, 1.0) and texts == {} and outlined == []
