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
