"""One source of truth for settings: the dataclass fields make the CLI and the API's settings object."""

from dataclasses import fields

import pytest

from core import config
from core import settings as settings_io
from core.config import PRESETS, DataConfig, TrainConfig
from core.errors import StudioError
from core.settings import from_settings
from core.train import get_args_parser, main, parse_args, run_training


def test_every_setting_has_one_cli_option_whose_default_is_the_fields():
    ap = get_args_parser()
    options = {a.dest: a for a in ap._actions}
    for cls in (DataConfig, TrainConfig):
        for f in fields(cls):
            if f.name in ("data",) or (cls is DataConfig and f.name == "seed"):
                continue  # the data's seed is the run's --seed
            assert f.name in options, f.name
            assert options[f.name].default == f.default, f.name
            assert options[f.name].help == f.metadata["help"], f.name


def test_the_default_command_line_is_the_default_config():
    assert settings_io.from_args(parse_args([])) == TrainConfig()


@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["--epochs", "7"], "epochs", 7),
        (["--no-rga"], "rga", False),
        (["--skip-bad-files"], "skip_bad_files", True),
        (["--image-size", "48"], "image_size", 48),
        (["--seed", "3"], "seed", 3),
        (["--kd-scaling", "paper"], "kd_scaling", "paper"),
        (["--no-cuda-graphs"], "cuda_graphs", False),
        (["--resize", "bilinear"], "resize", "bilinear"),
    ],
)
def test_a_flag_sets_its_field(argv, field, value):
    cfg = settings_io.from_args(parse_args(argv))
    target = cfg.data if field in ("image_size", "skip_bad_files", "resize") else cfg
    assert getattr(target, field) == value
    if field == "seed":
        assert cfg.data.seed == 3  # the split follows the run's seed


def test_settings_by_name_fill_the_rest_with_defaults():
    cfg = from_settings({"method": "ce", "epochs": 1})
    assert (cfg.method, cfg.epochs, cfg.batch_size, cfg.data) == ("ce", 1, 128, DataConfig())


def test_data_settings_may_be_flat_or_nested_and_the_seed_follows_the_run():
    flat = from_settings({"image_size": 16, "synthetic_train": 64, "seed": 5})
    nested = from_settings({"data": {"image_size": 16, "synthetic_train": 64}, "seed": 5})
    assert flat == nested and flat.data.image_size == 16 and flat.data.seed == 5


def _value(cfg, name):
    """A setting of `cfg` by name, whether it is the run's or its data's."""
    return getattr(cfg.data if name in DataConfig.__dataclass_fields__ else cfg, name)


def test_a_preset_applies_first_and_the_settings_given_still_win():
    cfg = from_settings({"preset": "paper", "epochs": 3})
    assert cfg.epochs == 3 and cfg.kd_scaling == "paper" and cfg.kd_warmup == 0 and cfg.preset == "paper"
    assert {k: getattr(cfg, k) for k in PRESETS["paper"] if k != "epochs"} == {
        k: v for k, v in PRESETS["paper"].items() if k != "epochs"
    }


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_setting_of_a_preset_applies_the_run_s_and_the_data_s(preset):
    cfg = from_settings({"preset": preset})
    assert cfg.preset == preset
    assert {k: _value(cfg, k) for k in PRESETS[preset]} == PRESETS[preset]


@pytest.mark.parametrize("given", [{"image_size": 16}, {"data": {"image_size": 16}}], ids=["flat", "nested"])
def test_the_quick_preset_sets_the_demo_data_and_a_data_setting_given_still_wins(given):
    cfg = from_settings({"preset": "quick", "synthetic_train": 200, **given})
    assert (cfg.epochs, cfg.kd_warmup, cfg.method, cfg.kd_scaling, cfg.batch_size) == (5, 0, "tss-kd", "nontarget", 32)
    assert (cfg.data.image_size, cfg.data.synthetic_train) == (16, 200)
    assert from_settings({"preset": "quick"}).data.synthetic_train == 1000
    assert from_settings({"preset": "quick", "batch_size": 128}).batch_size == 128


@pytest.mark.parametrize(
    ("settings", "optimizer", "lr"),
    [
        ({"preset": "quick"}, "adam", 0.001),  # 160 steps: Adam learns the demo task, SGD at 0.01 little of it
        ({"preset": "quick", "optimizer": "sgd", "lr": 0.01}, "sgd", 0.01),  # a setting given still wins
        ({"preset": "paper"}, "sgd", 0.01),  # the published recipe as published
        ({}, "sgd", 0.01),  # the long default runs
    ],
)
def test_short_runs_learn_with_adam_and_the_long_and_published_ones_with_sgd(settings, optimizer, lr):
    cfg = from_settings(settings)
    assert (cfg.optimizer, cfg.lr) == (optimizer, lr)


def test_whole_floats_are_accepted_for_integers():
    assert from_settings({"epochs": 3.0}).epochs == 3


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("not an object", "must be a JSON object"),
        ({"epoch": 3}, "unknown setting 'epoch'"),
        ({"epochs": "3"}, "'epochs' must be int"),
        ({"epochs": True}, "'epochs' must be int"),
        ({"lr": "fast"}, "'lr' must be float"),
        ({"rga": 1}, "'rga' must be bool"),
        ({"runs_dir": "/elsewhere"}, "set by the studio"),
        ({"data": [1]}, "'data' must be a JSON object"),
        ({"data": {"size": 3}}, "unknown data setting 'size'"),
        ({"preset": "fast"}, "unknown preset 'fast'"),
        ({"preset": ["quick"]}, "'preset' must be str"),
        ({"seed": 10**30}, "the seed must be a whole number"),
        ({"data": {"seed": -(2**63) - 1}}, "the seed must be a whole number"),
        ({"lr": 1e308}, "the learning rate must be a positive number, at most 10"),
        ({"t_target": 1e-320}, "temperatures must be positive numbers of at least 0.001"),
        ({"image_size": 2048}, "image size must be between 8 and 1024 pixels, not 2048"),
        ({"synthetic_train": 10**12}, "the demo data would take"),
        ({"preset": {"epochs": 5}}, "'preset' must be str"),
        ({"resize": "bicubic"}, "unknown resize filter 'bicubic'; choose one of lanczos, bilinear"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(settings, message):
    with pytest.raises(StudioError, match=message):
        from_settings(settings).resolved()  # as the API, the form and the command line check them


HOSTILE = [[], ["quick"], {}, {"epochs": 5}, "", "x", -1, 0, 1.5, True, 10**30, float("nan"), float("inf")]


@pytest.mark.parametrize("name", sorted({f.name for f in fields(TrainConfig)} - {"data", "runs_dir"}))
def test_any_value_of_any_run_setting_is_taken_or_refused_with_a_message(name):
    for value in HOSTILE:  # what an API caller may send; a crash would reach them as a bare error
        try:
            from_settings({name: value}).resolved()
        except StudioError:
            pass


@pytest.mark.parametrize("name", sorted(f.name for f in fields(DataConfig)))
def test_any_value_of_any_data_setting_is_taken_or_refused_with_a_message(name):
    for value in HOSTILE:
        for settings in ({name: value}, {"data": {name: value}}):
            try:
                from_settings(settings).resolved()
            except StudioError:
                pass


@pytest.mark.parametrize(
    "data",
    [{"synthetic_train": 0}, {"synthetic_train": -5}, {"synthetic_val": 0}, {"synthetic_test": 0}],
    ids=["no-train", "negative-train", "no-val", "no-test"],
)
def test_demo_data_without_images_is_refused_before_any_run_folder(tmp_path, data):
    """Checked in TrainConfig.resolved(), so the CLI, the API, the Train tab and a sweep all refuse it."""
    from core.config import DataConfig, TrainConfig
    from core.jobs import JobManager

    cfg = TrainConfig(data=DataConfig(image_size=16, **data), epochs=1, device="cpu", runs_dir=str(tmp_path))
    with pytest.raises(StudioError, match="at least one training image and one image in each split"):
        cfg.resolved()
    jobs = JobManager(tmp_path)
    try:
        with pytest.raises(StudioError, match="at least one training image"):
            jobs.submit(cfg)
    finally:
        jobs.close()
    assert not any(tmp_path.iterdir())


def test_resuming_with_changed_settings_is_refused_and_says_which(tiny_run, capsys):
    assert main(["--resume", str(tiny_run), "--epochs", "200", "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--epochs 200 (the run has 2)" in err and "--lr 0.5 (the run has 0.01)" in err
    assert "Traceback" not in err
    # the same values, or another device, are not a change: the run's own state decides
    assert main(["--resume", str(tiny_run), "--epochs", "2", "--device", "cpu"]) == 2
    assert "already finished" in capsys.readouterr().err


def test_prepared_starts_a_prepared_run_and_refuses_one_that_started_before(tiny_run, tmp_path, capsys):
    import json
    from dataclasses import asdict

    from conftest import tiny_config

    from core import runs

    prepared = runs.Run.create(tmp_path / "runs", "prepared", asdict(tiny_config(tmp_path).resolved()))
    prepared.set_status("queued")
    assert main(["--prepared", str(prepared.path), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["status"] == "done"
    assert prepared.status()["status"] == "done" and prepared.has_model()
    assert main(["--prepared", str(tiny_run)]) == 2
    assert "has started before; continue it with --resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--prepared", str(tiny_run), "--resume", str(tiny_run)])


@pytest.mark.parametrize(
    ("method", "used"),
    [
        ("ce", set()),
        ("kd", {"t_target", "kd_weight", "kd_warmup"}),
        ("ps-kd", {"ps_alpha"}),
        ("tss-kd", {"t_target", "t_nontarget", "kd_weight", "kd_scaling", "kd_warmup"}),
    ],
)
def test_a_run_records_only_the_method_settings_its_method_uses_and_reads_back(method, used):
    cfg = TrainConfig(method=method).resolved()
    record = config.to_record(cfg)
    assert {k for k in config.METHOD_SETTINGS if record[k] is not None} == used
    again = TrainConfig.from_dict(record).resolved()
    assert {k: getattr(again, k) for k in used} == {k: getattr(cfg, k) for k in used}


def test_new_runs_resize_with_lanczos_and_a_run_saved_before_the_setting_reads_back_as_bilinear():
    assert TrainConfig().data.resize == "lanczos" and from_settings({}).data.resize == "lanczos"
    record = config.to_record(TrainConfig().resolved())
    assert TrainConfig.from_dict(record).data.resize == "lanczos"  # a run saved now keeps its filter
    del record["data"]["resize"]  # as a run saved before resizing was a setting: it resized with bilinear
    assert TrainConfig.from_dict(record).data.resize == "bilinear"


@pytest.mark.parametrize(
    "name,kind,default,widget",
    [
        ("t_target", float, 4.0, "Number"),
        ("t_nontarget", float, 0.4, "Number"),
        ("ps_alpha", float, 0.8, "Number"),
        ("kd_warmup", int, 10, "Number"),
        ("image_size", int, 32, "Number"),
        ("method", str, "tss-kd", "Dropdown"),
        ("kd_scaling", str, "nontarget", "Dropdown"),
        ("rga", bool, True, "Checkbox"),
        ("name", str, None, "Textbox"),
    ],
)
def test_form_inputs_take_kind_default_and_help_from_the_setting(name, kind, default, widget):
    """The Train form is built from the config's fields: change a default there and the form follows."""
    from core.settings import field_spec
    from ui.form import setting_input

    spec = field_spec(name)
    assert spec["kind"] is kind and spec["default"] == default and spec["help"]
    component = setting_input(name, "label")
    assert type(component).__name__ == widget and component.value == default
    assert component.info == spec["help"]
    if widget == "Number":
        assert component.precision == (0 if kind is int else None)
    if widget == "Dropdown":
        assert [c[1] for c in component.choices] == list(spec["choices"])


def test_a_form_input_for_an_unknown_setting_is_a_programming_error():
    from core.settings import field_spec

    with pytest.raises(KeyError, match="no setting"):
        field_spec("learning_rate")


def test_the_demo_splits_follow_the_training_size_alike_from_the_cli_the_api_and_the_form(tmp_path):
    """Validation and test are a fifth of the demo training images each, at least 64, however a run is
    started; before, the CLI kept 1,000 each while the Train tab took a fifth."""
    from ui.train import form_settings

    form, _ = form_settings(
        {"source": "demo data", "demo_images": 1000, "processes": 1, "recipe": None, "method": "tss-kd"}
    )
    cli = settings_io.from_args(parse_args(["--synthetic-train", "1000"])).resolved().data
    assert cli == from_settings({"synthetic_train": 1000}).resolved().data == from_settings(form).resolved().data
    assert (cli.synthetic_train, cli.synthetic_val, cli.synthetic_test) == (1000, 200, 200)
    default = TrainConfig().resolved().data
    assert (default.synthetic_val, default.synthetic_test) == (1000, 1000)
    small = from_settings({"synthetic_train": 100, "synthetic_test": 30}).resolved().data
    assert (small.synthetic_val, small.synthetic_test) == (64, 30)  # at least 64; a size given wins

    from conftest import tiny_config

    from core.runs import Run

    run = Run(run_training(tiny_config(tmp_path, data=DataConfig(image_size=16, synthetic_train=80))))
    recorded = run.config()["data"]
    assert (recorded["synthetic_val"], recorded["synthetic_test"]) == (64, 64)  # the sizes it trained with
    assert '"val": {"size": 64' in run.log_path.read_text()


@pytest.mark.parametrize(
    "started",
    [
        {},
        {"preset": "quick"},
        {"preset": "paper", "epochs": 3},
        {"method": "ce", "lr": 0.05, "seed": 7, "momentum": 0.8},
        {"method": "ps-kd", "ps_alpha": 0.5, "rga": False, "gamma_min": 0.3},
        {"method": "kd", "t_target": 2.0, "kd_warmup": 2, "weight_decay": 0.0},
        {"dataset": "medmnist", "data_path": "/data/m.npz", "image_size": 28, "val_fraction": 0.2},
        {"synthetic_train": 300, "synthetic_val": 50, "optimizer": "adam", "lr": 0.002, "name": "trial"},
    ],
    ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "defaults",
)
def test_a_run_like_another_repeats_every_setting_but_its_name(started):
    """--like RUN and the API's "like": with no change, the run's config.json again (settings the Train form
    has no field for included); the name is the new run's own."""
    record = config.to_record(from_settings(started).resolved())
    again = config.to_record(settings_io.like(record, {}).resolved())
    assert {**again, "name": None} == {**record, "name": None}
    assert again["name"] == from_settings({k: v for k, v in started.items() if k != "name"}).resolved().name
    assert config.to_record(settings_io.like(record, {}, runs_dir="/elsewhere").resolved())["runs_dir"] == "/elsewhere"


KD_SETTINGS = ("t_target", "t_nontarget", "kd_weight", "kd_scaling", "kd_warmup")


@pytest.mark.parametrize(
    ("changes", "changed", "data_changed"),
    [
        ({"t_target": 6.0}, {"t_target": 6.0}, {}),
        ({"seed": 3}, {"seed": 3}, {"seed": 3}),  # the split follows the run's seed, as ever
        ({"image_size": 48}, {}, {"image_size": 48}),
        ({"data": {"synthetic_train": 400}}, {}, {"synthetic_train": 400}),  # its validation size stays the run's
        ({"method": "ce"}, {"method": "ce", **dict.fromkeys(KD_SETTINGS)}, {}),  # TSS-KD's settings unrecorded
        # a preset's recipe applies over the run's settings (its momentum too), and the changes given still win
        ({"preset": "paper", "kd_warmup": 2}, {"preset": "paper", "kd_scaling": "paper", "kd_warmup": 2}, {}),
    ],
    ids=lambda v: ",".join(v) if isinstance(v, dict) else None,
)
def test_a_run_like_another_changes_only_what_is_given(changes, changed, data_changed):
    record = config.to_record(from_settings({"momentum": 0.8, "synthetic_train": 300}).resolved())
    again = config.to_record(settings_io.like(record, changes).resolved())
    differs = {k: again[k] for k in again if k not in ("data", "name") and again[k] != record[k]}
    if "preset" in changes:
        assert differs.pop("momentum") == PRESETS["paper"]["momentum"] != record["momentum"]
    assert differs == changed
    assert {k: v for k, v in again["data"].items() if v != record["data"][k]} == data_changed


@pytest.mark.parametrize(
    ("record", "changes", "message"),
    [
        (None, {}, "the run's settings cannot be read"),
        ({"methd": "ce"}, {}, "the run's settings cannot be read"),
        ({}, {"runs_dir": "/tmp/x"}, "'runs_dir' is set by the studio"),
        ({}, {"epocs": 3}, "unknown setting 'epocs'"),
        ({}, {"epochs": "many"}, "setting 'epochs' must be int"),
    ],
)
def test_a_run_like_a_broken_record_or_with_bad_changes_is_refused(record, changes, message):
    with pytest.raises(StudioError, match=message):
        settings_io.like(record, changes)


def test_train_like_a_run_starts_a_new_run_with_its_settings_and_the_flags_given(tiny_run, tmp_path, capsys):
    import json

    from core import runs

    out = tmp_path / "elsewhere"
    assert main(["--like", str(tiny_run), "--epochs", "1", "--lr", "0.02", "--runs-dir", str(out)]) == 0
    new = runs.Run(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run"])
    old, again = runs.Run(tiny_run).config(), new.config()
    assert new.path.parent == out and new.status()["status"] == "done" and new.path != tiny_run
    assert (again["epochs"], again["lr"], again["runs_dir"]) == (1, 0.02, str(out))
    assert {k: v for k, v in again.items() if k not in ("epochs", "lr", "runs_dir", "name")} == {
        k: v for k, v in old.items() if k not in ("epochs", "lr", "runs_dir", "name")
    }


def test_train_like_no_run_or_with_resume_is_refused_and_makes_no_run(tiny_run, tmp_path, capsys):
    assert main(["--like", str(tmp_path / "nothing"), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "nothing: not a run folder" in capsys.readouterr().err
    assert main(["--like", str(tiny_run), "--epochs", "0", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "train for at least one epoch" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    with pytest.raises(SystemExit):
        main(["--like", str(tiny_run), "--resume", str(tiny_run)])


def test_train_like_a_run_makes_the_new_run_beside_it(tiny_run, capsys):
    import json
    import shutil

    from core import runs

    assert main(["--like", str(tiny_run), "--epochs", "1"]) == 0
    new = runs.Run(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run"])
    try:
        assert new.path.parent == tiny_run.parent and new.status()["status"] == "done"
    finally:
        shutil.rmtree(new.path)  # the shared run's folder stays as the other tests expect it
