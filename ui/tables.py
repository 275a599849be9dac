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


# Each column's share of the table's width, as the pixels it needs in a table 1,300 px wide (a 1,400 px
# window): its header's longest word and its longest unbreakable value ("synthetic", "0.933") on one line
WIDTHS = {"run": 190, "status": 96, "warnings": 100, "method": 87, "t_target": 77, "t_nontarget": 77}
WIDTHS |= {"kd_weight": 77, "rga": 68, "dataset": 106, "optimizer": 106, "epochs": 80}
WIDTHS |= {"best_val_auc": 72, "best_val_acc": 72, "test_acc": 72}
OTHER = 80


def widths(columns: list[str], sizes: dict[str, int] = WIDTHS) -> list[str]:
    """gr.Dataframe's column_widths for `columns` (the pixels each needs, from `sizes`), as shares of the table
    summing to 100%."""
    total = sum(sizes.get(c, OTHER) for c in columns)
    return [f"{100 * sizes.get(c, OTHER) / total:.1f}%" for c in columns]


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
