"""The settings in and out, all made from the fields of core.config's `DataConfig` and `TrainConfig` (their
types, defaults, help texts and choices): the command line of `python -m core.train` (`add_arguments` /
`from_args`), the settings object the studio's API accepts (`from_settings`), and what a form needs to show
one setting (`field_spec`). Nothing here names a setting: a new field in core.config appears in all three.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, fields, replace

from core.config import METHOD_SETTINGS, PRESETS, DataConfig, TrainConfig
from core.errors import StudioError


def _base_type(cls, name: str) -> type:
    """The field's type without `None`: `float | None` -> float."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    return args[0]


def _cli_fields(cls) -> list:
    return [f for f in fields(cls) if f.metadata.get("cli", True)]


def field_spec(name: str) -> dict:
    """What a form needs to show setting `name` (a field of TrainConfig or DataConfig): its type without
    None, its default (a method setting's is the default method's published value), help and choices."""
    for cls in (TrainConfig, DataConfig):
        found = {f.name: f for f in fields(cls)}.get(name)
        if found is not None:
            break
    else:
        raise KeyError(f"no setting named {name!r}")
    default = found.default if found.default is not MISSING else None
    if name in METHOD_SETTINGS and default is None:
        default = getattr(TrainConfig().resolved(), name)
    return {
        "kind": _base_type(cls, name),
        "default": default,
        "help": found.metadata["help"],
        "choices": found.metadata.get("choices"),
    }


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """One option per setting, its help, type, choices and default taken from the dataclass field."""
    for title, cls in (("data", DataConfig), ("training", TrainConfig)):
        group = ap.add_argument_group(title)
        for f in _cli_fields(cls):
            kind = _base_type(cls, f.name)
            flag = "--" + f.name.replace("_", "-")
            default = f.default if f.default is not MISSING else None
            extra = {k: f.metadata[k] for k in ("choices", "metavar") if k in f.metadata}
            if kind is bool:
                group.add_argument(
                    flag, action=argparse.BooleanOptionalAction, default=default, help=f.metadata["help"]
                )
            else:
                group.add_argument(flag, type=kind, default=default, help=f.metadata["help"], **extra)


def from_args(args: argparse.Namespace) -> TrainConfig:
    """The config the parsed command line describes; the data's seed is the run's seed."""
    data = DataConfig(**{f.name: getattr(args, f.name) for f in _cli_fields(DataConfig)}, seed=args.seed)
    return TrainConfig(data=data, **{f.name: getattr(args, f.name) for f in _cli_fields(TrainConfig)})


# What the studio's API may not set: where runs are written is the studio's choice, not the caller's.
SERVER_OWNED = ("runs_dir",)


def _coerce(name: str, kind: type, value):
    if value is None:
        return None
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer(),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[kind]
    if not ok:
        raise StudioError(f"setting '{name}' must be {kind.__name__}, not {value!r}.")
    return kind(value)


def from_settings(settings: dict, *, base: TrainConfig | None = None) -> TrainConfig:
    """A config from a settings object (the API's JSON): any subset of TrainConfig's fields, with the data's
    fields either flat (`"image_size": 64`) or under `"data"`; `"preset"` applies its recipe first and the
    settings given still win. Unknown names and wrong types are refused with a clear message."""
    if not isinstance(settings, dict):
        raise StudioError("settings must be a JSON object of TrainConfig fields.")
    settings = dict(settings)
    nested = settings.pop("data", None) or {}
    if not isinstance(nested, dict):
        raise StudioError("'data' must be a JSON object of DataConfig fields.")
    data_names = {f.name for f in fields(DataConfig)}
    train_fields = {f.name: f for f in fields(TrainConfig) if f.name != "data"}
    data_fields = {f.name: f for f in fields(DataConfig)}
    for key in settings:
        if key in SERVER_OWNED:
            raise StudioError(f"'{key}' is set by the studio, not by the caller.")
        if key not in train_fields and key not in data_names:
            known = ", ".join(sorted({*train_fields, *data_names} - set(SERVER_OWNED)))
            raise StudioError(f"unknown setting '{key}'; known settings: {known}.")
    for key in nested:
        if key not in data_fields:
            raise StudioError(f"unknown data setting '{key}'; known: {', '.join(data_fields)}.")
    preset = _coerce("preset", str, settings.get("preset"))
    if preset is not None and preset not in PRESETS:
        raise StudioError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}.")
    recipe = PRESETS[preset] if preset else {}
    values = {k: v for k, v in recipe.items() if k in train_fields}
    values |= {k: v for k, v in settings.items() if k in train_fields}
    data_values = {k: v for k, v in recipe.items() if k in data_names and k not in train_fields}
    data_values |= nested | {k: v for k, v in settings.items() if k in data_names and k not in train_fields}
    base = base or TrainConfig()
    train = {k: _coerce(k, _base_type(TrainConfig, k), v) for k, v in values.items()}
    data = {k: _coerce(k, _base_type(DataConfig, k), v) for k, v in data_values.items()}
    data.setdefault("seed", train.get("seed", base.seed))
    return replace(base, data=replace(base.data, **data), **train)


def like(record: dict, changes: dict, *, runs_dir: str | None = None) -> TrainConfig:
    """A new run like the one `record` (a run's config.json) describes: every setting of that run, with
    `changes` (a settings object as `from_settings` takes; a preset's recipe applies over the run's settings
    and `changes` still win) over them, under a name of its own unless `changes` names it; written to
    `runs_dir` when given, else where that run was. `python -m core.train --like RUN` and the studio's
    `/start_training` with `"like"` start runs so."""
    if not isinstance(record, dict):
        raise StudioError("the run's settings cannot be read (no readable config.json).")
    # a setting the run's method does not use is recorded as null: a run like it with another method takes
    # that setting's default, as a new run would (read as saved, a null KD warm-up is no warm-up)
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.name in METHOD_SETTINGS}
    record = {**record, **{k: defaults[k] for k in METHOD_SETTINGS if k in record and record[k] is None}}
    try:
        base = TrainConfig.from_dict(record)
    except (TypeError, ValueError) as e:
        raise StudioError(f"the run's settings cannot be read ({e}).") from None
    return from_settings(changes, base=replace(base, name=None, runs_dir=runs_dir or base.runs_dir))
