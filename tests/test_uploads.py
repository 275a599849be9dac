"""What the tabs take from a file component: the paths it holds, and a clear refusal for an upload the cache's
clean-up has removed (a scan is kept five minutes at most: docs/safety.md)."""

from types import SimpleNamespace

import pytest

from core.errors import StudioError
from ui.context import uploaded


@pytest.mark.parametrize("empty", [None, [], ""])
def test_no_file_is_no_path(empty):
    assert uploaded(empty) == []


def test_one_path_a_list_and_file_objects_give_their_paths(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.dcm"
    a.write_bytes(b"x")
    b.write_bytes(b"y")
    assert uploaded(str(a)) == [str(a)]
    assert uploaded([str(a), SimpleNamespace(name=str(b))]) == [str(a), str(b)]


@pytest.mark.parametrize(("missing", "pronoun"), [(["gone.png"], "it"), (["gone.png", "also.dcm"], "them")])
def test_a_removed_upload_is_refused_naming_it_and_saying_what_to_do(tmp_path, missing, pronoun):
    kept = tmp_path / "kept.png"
    kept.write_bytes(b"x")
    files = [str(kept)] + [str(tmp_path / m) for m in missing]
    with pytest.raises(StudioError) as e:
        uploaded(files)
    said = str(e.value)
    assert said.startswith(", ".join(missing) + ":") and "kept.png" not in said
    assert f"has removed {pronoun}" in said and "5 minutes" in said and "upload again" in said
