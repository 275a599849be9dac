"""Form inputs made from the settings themselves (core.settings.field_spec): each widget's kind, default,
choices and help come from the TrainConfig or DataConfig field it edits, so a setting is described once."""

from __future__ import annotations

import math

import gradio as gr

from core import settings as config_io
from core.errors import StudioError


def setting_input(name: str, label: str, **extra):
    """The input for setting `name`: a dropdown for a choice, a checkbox for a switch, a number (whole for
    an int) or a text box; `extra` overrides what the field says (value, choices, info, elem_id, ...)."""
    spec = config_io.field_spec(name)
    kind, choices = spec["kind"], extra.pop("choices", spec["choices"])
    info = None if spec["help"].lower() == label.lower() else spec["help"]  # no label said twice
    args = {"label": label, "info": info, "value": spec["default"], **extra}
    if choices:
        return gr.Dropdown(list(choices), **args)
    if kind is bool:
        return gr.Checkbox(**args)
    if kind in (int, float):
        return gr.Number(precision=0 if kind is int else None, **args)
    return gr.Textbox(**args)


def given(value, label: str):
    """A number field's value as the handler gets it, refused by its label when the field was emptied (None,
    or "") or holds no finite number: int(None) stopped a handler with a bare "Error", and a form that left
    it out started a run with the default unseen. The settings' own checks judge its range."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise StudioError(f"{label}: give a number.")
    return value


def whole(value, label: str) -> int:
    """`given`, as a whole number."""
    return int(given(value, label))
