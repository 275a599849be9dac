"""A tab's settings kept across a reload of the page: the studio holds each form's last values in its own
memory, by logged-in user (or for the one user of a studio without login), and gives them back when the page
loads again. Nothing is written to disk or to the browser (docs/safety.md), uploads are never kept, and a
restart of the studio forgets them."""

from __future__ import annotations

import copy
import threading

import gradio as gr


class KeptForms:
    """The last values of each form by (user, form name), in memory only."""

    def __init__(self):
        self._values: dict[tuple, list] = {}
        self._lock = threading.Lock()

    def save(self, user: str | None, form: str, values: list) -> None:
        with self._lock:
            self._values[(user, form)] = copy.deepcopy(list(values))

    def clear(self) -> None:
        """Forget every form, as a restart of the studio does."""
        with self._lock:
            self._values.clear()

    def get(self, user: str | None, form: str) -> list | None:
        with self._lock:
            values = self._values.get((user, form))
        return None if values is None else copy.deepcopy(values)


# A listener's settings to answer every change, one at a time in the order they came (so the last answer is the
# last change's), for a trigger that already has an always_last listener in Python. gradio 6.31's page, when an
# always_last answer comes while its trigger fired again, sends the whole trigger again: every listener of it, not
# that one; two always_last listeners of one trigger whose answers overlap so send each other's trigger forever
# (the Train tab's Data radio fired 3 times a second, unchanged, its renderer at 80% of a core until a reload).
# tests/test_kept.py checks every trigger of the studio.
IN_ORDER = {"trigger_mode": "multiple", "concurrency_limit": 1}


def user_of(request: gr.Request | None) -> str | None:
    """Whose form it is: the logged-in user's, None in a studio without login."""
    return getattr(request, "username", None) or None


def keep_on_reload(kept: KeptForms, form: str, components: list, *, reset=None, shape=None) -> None:
    """Keep the values of `components` (a form's settings; never an upload) whenever one changes, by the
    page's user, and put them back when the page is loaded again, so that a reload loses nothing typed.
    `reset`, a button, puts every component's first value back (what a reload gave before it kept them).
    `shape(values)`, given the values put back by component, returns {component: other properties} sent with
    them (the fields a method uses shown, the rest hidden), so the page is right at once: the change events
    that would say so come seconds later while the page's loading keeps the studio busy."""
    components = list(components)

    def put(values: list):
        extra = shape(dict(zip(components, values, strict=True))) if shape else {}
        out = [gr.update(value=v, **extra[c]) if c in extra else v for c, v in zip(components, values, strict=True)]
        return out if len(components) > 1 else out[0]

    if reset is not None:
        firsts = [copy.deepcopy(c.value) for c in components]
        reset.click(lambda: put(copy.deepcopy(firsts)), None, components, api_name=False, show_progress="hidden")

    # one dict of the values: a handler taking *values gets no gr.Request (gradio injects it only among the
    # positional parameters before a *args), and every user's form was kept as the studio's one user's
    def save(values: dict, request: gr.Request = None):
        kept.save(user_of(request), form, [values[c] for c in components])

    def restore(request: gr.Request = None):
        values = kept.get(user_of(request), form)
        if values is None or len(values) != len(components):
            return [gr.skip() for _ in components] if len(components) > 1 else gr.skip()
        return put(values)

    # every change saved (under 1 ms each), the last one kept; the tab's own work on the change is always_last
    gr.on(
        [c.change for c in components],
        save,
        set(components),
        None,
        api_name=False,
        show_progress="hidden",
        **IN_ORDER,
    )
    gr.on(None, restore, None, components, api_name=False, show_progress="hidden")
