"""Run folders: the list the Runs tab and every picker show."""

from core import runs


def test_runs_are_listed_newest_first_by_start_time_not_by_name(tmp_path, monkeypatch):
    made = []
    for name, stamp in [("zeta", "20261126-100000"), ("alpha", "20261126-100005"), ("alpha", "20261126-100005")]:
        monkeypatch.setattr(runs.time, "strftime", lambda fmt, stamp=stamp: stamp)
        run = runs.create_run_dir(tmp_path, name)
        runs.write_json(run / "config.json", {"method": "ce"})
        made.append(run.name)
    assert made == ["zeta-20261126-100000", "alpha-20261126-100005", "alpha-20261126-100005-2"]
    (tmp_path / "not-a-run").mkdir()  # no config.json: left out
    assert [r["run"] for r in runs.list_runs(tmp_path)] == made[::-1]
