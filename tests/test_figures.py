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
    assert dashed["val_auc"] == [0.5] and dashed["train_loss"] == []
    assert dashed["val_acc"] == ([chance] if chance else [])
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
