"""The tabs' settings the studio keeps across a reload (ui.kept): by user and by form, in memory only."""

from types import SimpleNamespace

import pytest

from ui.kept import KeptForms, user_of


def test_nothing_is_kept_before_a_form_changes():
    assert KeptForms().get(None, "train") is None


@pytest.mark.parametrize(
    ("saved_by", "asked_by", "form", "found"),
    [
        (None, None, "train", True),  # a studio without login: its one user
        ("ana", "ana", "train", True),
        ("ana", "ben", "train", False),  # with login, one user's form is never another's
        ("ana", None, "train", False),
        ("ana", "ana", "sweep", False),  # each form apart
    ],
)
def test_a_form_is_given_back_to_its_user_only(saved_by, asked_by, form, found):
    kept = KeptForms()
    kept.save(saved_by, "train", ["ce", 7, "a name"])
    assert kept.get(asked_by, form) == (["ce", 7, "a name"] if found else None)


def test_the_last_values_saved_are_the_ones_kept_and_later_changes_to_a_list_do_not_reach_them():
    kept = KeptForms()
    values = ["tss-kd", 100, {"data": "x"}]
    kept.save(None, "train", values)
    values[1] = 5
    values[2]["data"] = "y"
    assert kept.get(None, "train") == ["tss-kd", 100, {"data": "x"}]
    kept.get(None, "train")[1] = 9  # what a handler got cannot change them either
    kept.save(None, "train", ["ce", 3, None])
    assert kept.get(None, "train") == ["ce", 3, None]


@pytest.mark.parametrize(
    ("request_", "user"),
    [(None, None), (SimpleNamespace(username=None), None), (SimpleNamespace(username=""), None)]
    + [(SimpleNamespace(username="ana"), "ana"), (SimpleNamespace(), None)],
)
def test_the_user_is_the_one_logged_in_else_the_studios_one_user(request_, user):
    assert user_of(request_) == user


def test_clear_forgets_every_users_forms():
    kept = KeptForms()
    kept.save(None, "train", [1])
    kept.save("ana", "sweep", [2])
    kept.clear()
    assert kept.get(None, "train") is None and kept.get("ana", "sweep") is None


def test_no_trigger_of_the_studio_has_two_always_last_listeners_that_run_in_python(tmp_path):
    """gradio's page sends a whole trigger again when an always_last answer comes after the trigger fired again;
    two such listeners of one trigger whose answers overlap re-sent each other's trigger forever (the Train tab's
    Data radio, three times a second, a core of the browser's CPU). So each trigger has at most one (ui.kept)."""
    from collections import defaultdict

    from app import build_app
    from core.jobs import JobManager
    from ui.context import Studio

    ctx = Studio(data_root=tmp_path, runs_dir=tmp_path / "runs", jobs=JobManager(tmp_path / "runs"))
    try:
        app = build_app(ctx)
    finally:
        ctx.jobs.close()
    deferred = defaultdict(list)
    for fn in app.fns.values():
        if fn.fn is not None and fn.trigger_mode == "always_last":
            for block, event in fn.targets:
                if event != "load":  # the page sends each load listener by itself, never a trigger again
                    deferred[(block, event)].append(fn.name)
    label = {
        b._id: getattr(b, "elem_id", None) or getattr(b, "label", None) or type(b).__name__ for b in app.blocks.values()
    }
    twice = {f"{label.get(block)} {event}": names for (block, event), names in deferred.items() if len(names) > 1}
    assert len(deferred) > 40  # the studio's forms were found (every setting's change)
    assert twice == {}, twice
