"""How the studio's run tables read (the Runs tab's, a sweep's): figures to three decimals, and headers in
words, so that a narrow column wraps between words instead of inside a field name."""

from __future__ import annotations

HEADERS = {
    "t_target": "T target",
    "t_nontarget": "T non-target",
    "kd_weight": "KD weight",
    "rga": "RGA",
    "best_val_auc": "best val AUC",
    "best_val_acc": "best val acc",
    "test_acc": "test acc",
    "test_auc": "test AUC",
}


# Share of the table's width per column: the run's name wide, no figure's header broken inside a word
WIDTHS = {"run": 20, "warnings": 13, "status": 6, "method": 6, "t_target": 7, "t_nontarget": 6, "kd_weight": 6}
WIDTHS |= {"rga": 5, "dataset": 8, "optimizer": 11, "epochs": 6, "best_val_auc": 5, "best_val_acc": 5, "test_acc": 5}


def widths(columns: list[str]) -> list[str]:
    """gr.Dataframe's column_widths for `columns`, as shares of the table summing to 100%."""
    total = sum(WIDTHS.get(c, 6) for c in columns)
    return [f"{100 * WIDTHS.get(c, 6) / total:.1f}%" for c in columns]


def headers(columns: list[str]) -> list[str]:
    """The shown header of each of `columns` (list_runs' keys)."""
    return [HEADERS.get(c, c) for c in columns]


def cell(value):
    """A table cell: a figure to three decimals (people read three), anything else as it is."""
    return rounded(value, 3)


def rounded(value, digits: int = 4):
    """`value` (a metrics dict, list or figure) with every float to `digits` decimals, for display."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value
