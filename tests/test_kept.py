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
