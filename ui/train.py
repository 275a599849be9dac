"""Train tab: choose data, method and device; start a run; watch its curves, progress and log; stop, resume."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import gradio as gr

from core import config, estimate, runs
from core import settings as config_io
from core.config import PRESETS, TrainConfig
from core.data import found_data
from core.errors import StudioError
from core.paths import confine
from ui.context import Studio, address_js, poll, user_error
from ui.form import given, setting_input, whole
from ui.kept import IN_ORDER, keep_on_reload
from ui.watch import duration, follow_runs, monitor, reopen

SOURCES = {"demo data": "synthetic", "MedMNIST .npz": "medmnist", "image folder or CSV": "folder"}
STABLE = "studio default (stable)"
RECIPES = {STABLE: None, "paper (Liu et al. 2025, exactly)": "paper"}
# The form fields a recipe sets, by their TrainConfig names, in the order `recipe_values` returns them.
RECIPE_FIELDS = ("method", "t_target", "t_nontarget", "kd_weight", "kd_scaling", "kd_warmup", "rga", "epochs")
RECIPE_FIELDS += ("batch_size", "lr", "optimizer")


def start_run(ctx: Studio, settings: dict, processes: int = 1) -> str:
    """Queue a run from a settings object (TrainConfig fields by name, see core.settings.from_settings), with
    paths confined to the data folder and runs written where the studio keeps them; with `"like": RUN_ID`,
    that run's settings with the ones given over them (`core.settings.like`). Returns the run id."""
    if isinstance(settings, dict) and "like" in settings:
        settings = dict(settings)
        record = like_record(ctx, settings.pop("like"), settings)
        cfg = config_io.like(record, settings, runs_dir=str(ctx.runs_dir))
    else:
        cfg = config_io.from_settings(settings, base=TrainConfig(runs_dir=str(ctx.runs_dir)))
    cfg = confined(ctx, cfg)
    if not isinstance(processes, int) or isinstance(processes, bool):
        raise StudioError("processes must be a whole number.")
    return ctx.jobs.submit(cfg, processes=processes).name


def inside_data_root(ctx: Studio, path: str) -> str | None:
    """A path a run recorded (absolute, resolved) as the data folder's relative name for it, a folder's
    with its "/"; None when it lies outside the data folder."""
    try:
        inside = Path(path).resolve().relative_to(ctx.data_root.resolve())
    except ValueError:
        return None
    return str(inside) + ("/" if Path(path).is_dir() else "")


def run_record(ctx: Studio, run_id: str) -> dict:
    """The config.json of run `run_id` of the runs folder, whose settings "like" and "Use its settings" take."""
    record = runs.Run(ctx.jobs.find(run_id)).config()
    if record is None:
        raise StudioError(f"{run_id} has no settings to take (its config.json cannot be read).")
    return record


def like_record(ctx: Studio, run_id, changes: dict) -> dict:
    """The settings of run `run_id` of the runs folder, for a run like it, its paths (the data, pretrained
    weights) as the data folder names them; a path outside the data folder is refused by name, since a
    caller could not give it either, unless `changes` (the settings given with "like") give another."""
    if not isinstance(run_id, str) or not run_id:
        raise StudioError('"like" takes the id of a run in the runs folder.')
    record = run_record(ctx, run_id)
    record = dict(record, data=dict(record.get("data") or {}))
    nested = changes.get("data") if isinstance(changes.get("data"), dict) else {}
    for where, key in ((record["data"], "data_path"), (record, "pretrained")):
        if key in changes or key in nested:
            where[key] = None  # the caller's path stands, confined as any other
        elif where.get(key):
            inside = inside_data_root(ctx, where[key])
            if inside is None:
                raise StudioError(f"{run_id}'s {key} is outside this studio's data folder; give \"{key}\" as well.")
            where[key] = inside
    return record


def confined(ctx: Studio, cfg: TrainConfig) -> TrainConfig:
    """`cfg` (parsed from a caller's settings) with its paths resolved inside the data folder; anything outside
    it is refused. Confined after parsing, so whichever way the settings gave a path (the data's flat or under
    "data", a preset) it is checked: confining the flat names alone once let a path under "data" through."""
    data_path = cfg.data.data_path and str(confine(ctx.data_root, cfg.data.data_path))
    pretrained = cfg.pretrained and str(confine(ctx.data_root, cfg.pretrained))
    return replace(cfg, pretrained=pretrained, data=replace(cfg.data, data_path=data_path))


def make_api(ctx: Studio):
    @user_error
    def start_training(settings: dict, processes: int = 1, request: gr.Request = None) -> str:
        """Queue a training run from one JSON object of settings by name (any subset of TrainConfig's fields;
        the data's fields flat or under "data"; the rest default, "preset": "paper" applies the published
        recipe; "like": a run's id takes that run's settings, the ones given changing them). `processes` > 1
        trains on that many GPUs with torchrun. Returns the run id."""
        ctx.require_user(request)
        return start_run(ctx, settings, processes)

    return start_training


FORM_FIELD = {"synthetic_train": "demo_images"}  # a setting the form holds under another name
# Fields a run cannot do without, by their labels: emptied, they are refused by name (they once fell back to
# the defaults unseen: Epochs cleared to retype it started a 100-epoch run). The method's settings and the
# name may be left empty for their defaults.
REQUIRED = {"image_size": "Image size (px)", "epochs": "Epochs", "batch_size": "Batch size"}
REQUIRED |= {"lr": "Learning rate", "seed": "Seed"}


def form_settings(values: dict) -> tuple[dict, int]:
    """The Train form's values by field name -> (settings for `start_run`, processes). Fields left empty
    (temperatures, weight, name) are left out, so the method's own defaults apply; those of `REQUIRED` are
    refused."""
    v = dict(values)
    for name, label in REQUIRED.items():
        if name in v:
            given(v[name], label)
    dataset = SOURCES.get(v.pop("source"), "synthetic")
    images = v.pop(FORM_FIELD["synthetic_train"])
    processes = whole(v.pop("processes"), "GPUs")
    started = v.pop("started_from", None)  # "quick" once the quick button has set the form's values
    v["preset"] = RECIPES.get(v.pop("recipe")) or started
    unused = set(config.METHOD_SETTINGS) - set(config.applies(v["method"]))
    settings = {k: val for k, val in v.items() if val not in (None, "") and k not in unused}
    settings["dataset"] = dataset
    if dataset == "synthetic":
        settings.pop("data_path", None)
        settings["synthetic_train"] = whole(images, "Demo training images")  # validation, test: a fifth each
    for k in ("image_size", "epochs", "batch_size", "seed", "kd_warmup"):
        if k in settings:
            settings[k] = int(settings[k])
    return settings, processes


def make_start(ctx: Studio, form: dict):
    names = {component: name for name, component in form.items()}

    @user_error
    def start_from_form(values: dict, request: gr.Request = None) -> str:
        ctx.require_user(request)
        settings, processes = form_settings({names[c]: v for c, v in values.items()})
        return start_run(ctx, settings, processes)

    return start_from_form


# The form's fields that hold a setting of the same name, as a run's config.json records it
SAME_NAME = ("method", "t_target", "t_nontarget", "kd_weight", "ps_alpha", "kd_scaling", "kd_warmup")
SAME_NAME += ("stop_on_collapse", "rga", "arch", "epochs", "batch_size", "lr", "optimizer", "device", "seed")


def form_from_run(ctx: Studio, run_id: str, devices: list) -> tuple[dict, list[str]]:
    """The Train form's values (by field name) that start a run like `run_id` again, and what of that run a
    run started from them would not repeat: the settings the form does not hold (given on the command line or
    through the API), a data path outside the data folder, a device this studio lacks. `devices` are the
    Device field's choices."""
    if not run_id:
        raise StudioError("choose a run whose settings to take.")
    record = run_record(ctx, run_id)
    data = record.get("data") or {}
    values = {k: record.get(k) for k in SAME_NAME}
    values |= dict(image_size=data.get("image_size"), demo_images=data.get("synthetic_train"), processes=1, name="")
    values["source"] = {v: k for k, v in SOURCES.items()}.get(data.get("dataset"), "demo data")
    preset = record.get("preset")
    values["recipe"] = next((label for label, p in RECIPES.items() if p and p == preset), STABLE)
    values["started_from"] = preset if preset in PRESETS and preset not in RECIPES.values() else None
    missed = []
    values["data_path"] = None
    if data.get("data_path"):
        values["data_path"] = inside_data_root(ctx, data["data_path"])
        if values["data_path"] is None:
            missed.append(f"its data ({data['data_path']}), outside this studio's data folder")
    offered = [value for _, value in devices]  # the first is where "auto" trains: a GPU if there is one
    wanted = {"auto": offered[0], "cuda": "cuda:0"}.get(values["device"], values["device"])
    if wanted not in offered:
        missed.append(f"its device ({values['device']}), which this studio does not offer")
    values["device"] = wanted if wanted in offered else offered[0]
    try:  # what a run started from the form would record, its data and device as this run's (said above)
        settings, _ = form_settings(values)
        settings |= {"device": record.get("device"), "data_path": data.get("data_path")}
        again = config.to_record(config_io.from_settings(settings, base=TrainConfig()).resolved())
    except StudioError as e:
        raise StudioError(f"{run_id}'s settings are incomplete or no longer valid: {e}") from None
    missed += [
        f"{key} {mine} (the form's run: {theirs})"
        for key, mine, theirs in config.record_differences(record, again)
        if key not in ("runs_dir", "name", "preset", "device", "data_path")
    ]
    return values, missed


def make_take_settings(ctx: Studio, form: dict, devices: list):
    order = list(form)

    @user_error
    def take(run_id: str):
        values, missed = form_from_run(ctx, run_id, devices)
        if missed:
            gr.Warning(
                f"The form now holds {run_id}'s settings but for what it cannot hold, which a new run would not "
                "repeat: " + "; ".join(missed) + "."
            )
        else:
            gr.Info(f"The form now holds {run_id}'s settings: change what you want to try, then Start.")
        return [values[name] for name in order]

    return take


def make_control(ctx: Studio, action: str):
    @user_error
    def control(run_id: str, request: gr.Request = None):
        ctx.require_user(request)
        getattr(ctx.jobs, action)(run_id)

    return control


def make_run_api(ctx: Studio) -> tuple:
    """The API's Stop and Resume: what the Train tab's buttons do, answering with the run's status after it."""

    @user_error
    def stop_training(run_id: str, request: gr.Request = None) -> dict:
        """Stop a run (API: /stop_training): drop it from its queue, or ask its trainer to stop after its current
        step (its kept model and metrics stay; it can be resumed). A run of a sweep's grid stops alone. Returns
        its status once stopped (SIGKILL follows a trainer that takes longer than the studio's grace period)."""
        ctx.require_user(request)
        ctx.jobs.stop(run_id)
        run, deadline = runs.Run(ctx.jobs.find(run_id)), time.monotonic() + ctx.jobs.grace_s + 10
        while run.status().get("status") not in runs.FINAL and time.monotonic() < deadline:
            time.sleep(0.25)  # its status.json alone; the metrics are read once, for the answer
        return ctx.jobs.status(run_id)

    @user_error
    def resume_training(run_id: str, request: gr.Request = None) -> dict:
        """Resume a stopped or failed run from its last epoch (API: /resume_training). Returns its status."""
        ctx.require_user(request)
        ctx.jobs.resume(run_id)
        return ctx.jobs.status(run_id)

    return stop_training, resume_training


def make_status(ctx: Studio):
    @user_error
    def run_status(run_id: str) -> dict:
        """Status, progress and latest metrics of a run (API: /run_status)."""
        return ctx.jobs.status(run_id)

    return run_status


def estimate_text(ctx: Studio, values: dict) -> tuple[str, dict]:
    """The time the form's run would take, before Start, and whether to offer the quick preset."""
    hidden = gr.update(visible=False)
    try:
        settings, _ = form_settings(values)
        if settings["dataset"] != "synthetic" and not settings.get("data_path"):
            return "Estimated time: once the data path is given.", hidden
        cfg = confined(ctx, config_io.from_settings(settings, base=TrainConfig(runs_dir=str(ctx.runs_dir)))).resolved()
        device, found = estimate_for(ctx, cfg)
    except StudioError as e:  # a path outside the data folder, or one that holds no readable data
        return f"Estimated time: not known: {e}", hidden
    except (TypeError, ValueError):
        return "", hidden
    if found is None:
        return f"Estimated time: not known yet on {device} (no run measured yet)." + warmup_note(cfg), hidden
    long = found["seconds"] > estimate.LONG_S and cfg.data.dataset == "synthetic"  # the preset is the demo's
    source = (
        f"measured over {found['epochs_measured']} earlier epochs"
        if found["epochs_measured"]
        else "a first figure from a few trial steps; the first run measures it"
    )
    text = (
        f"Estimated time: **about {duration(found['seconds'])}** on {device} for {found['train_images']:,} "
        f"training images an epoch ({found['images_per_s']:.0f} images/s, {source})."
    )
    if long:
        text += f" That is long: the quick preset trains {config.QUICK_TEXT}."
    return text + warmup_note(cfg), gr.update(visible=long)


def estimate_after_run(ctx: Studio, values: dict, status: dict | None, shown: list | None):
    """The form's estimate made again when the watched run has ended, since the speed it measured counts
    from then on; skipped while it trains and for an end already counted. Returns (estimate, the quick
    button, [run, state] now counted)."""
    now = [status.get("run"), status.get("status")] if status else None
    if now is None or now == shown or now[1] not in runs.FINAL:
        return gr.skip(), gr.skip(), now
    return (*estimate_text(ctx, values), now)


def warmup_note(cfg: TrainConfig) -> str:
    """A note when the KD warm-up outlasts the run, so the KD term never reaches its full weight; else ''."""
    share = config.warmup_shortfall(cfg)
    if share is None:
        return ""
    return (
        f" Note: the KD warm-up ({cfg.kd_warmup} epochs) is longer than the run ({cfg.epochs}), so the KD weight"
        f" reaches only {share:.0%} of its value, in the last epoch; lower the warm-up to give KD its full weight."
    )


def estimate_for(ctx: Studio, cfg: TrainConfig) -> tuple[str, dict | None]:
    """The device `cfg` would train on and core.estimate's figure for it there; a CPU with nothing measured
    is probed, but not while a run trains: the trial steps would slow it, and measure a shared CPU."""
    device = run_device(cfg.device)
    return device, estimate.estimate_seconds(ctx.runs_dir, cfg, device, probe=not ctx.jobs.active())


def run_device(name: str) -> str:
    """The device a run set to `name` trains on, as the time estimates name it ('auto': CUDA when present)."""
    from core.device import pick_device

    return str(pick_device(name)) if name == "auto" else name


def visible_for(method: str) -> list[bool]:
    """Whether each of the method settings (core.config.METHOD_SETTINGS) is shown: those `method` uses."""
    used = config.applies(method)
    return [name in used for name in config.METHOD_SETTINGS]


def shown_for(method: str) -> list:
    """Only the settings the chosen method uses are shown (core.config.applies); the rest are hidden."""
    return [gr.update(visible=v) for v in visible_for(method)]


def recipe_values(recipe: str) -> list:
    """The Train form's values for a recipe: the paper's exact settings, or the studio's stable defaults."""
    preset = RECIPES.get(recipe)
    cfg = TrainConfig().resolved()  # the defaults, with the default method's temperatures and weight filled in
    return [PRESETS[preset][f] if preset else getattr(cfg, f) for f in RECIPE_FIELDS]


def data_choices(ctx: Studio, source: str) -> dict:
    """The data path's choices for the source picked (`core.data.found_data`); a path typed stays."""
    return gr.update(choices=found_data(ctx.data_root, SOURCES.get(source, "synthetic")))


def build(ctx: Studio, device_choices) -> None:
    with gr.Tab("Train", id="train"):
        with gr.Row():
            with gr.Column(scale=1):
                source = gr.Radio(list(SOURCES), value="demo data", label="Data")
                data_path = gr.Dropdown(
                    [],
                    value=None,
                    label="Path inside the data folder",
                    info="what the data folder holds for this source is listed; or type a path "
                    "(e.g. octmnist.npz or scans/)",
                    allow_custom_value=True,
                    elem_id="train-data-path",
                )
                demo_images = gr.Number(
                    5000,
                    precision=0,
                    label="Demo training images",
                    info="demo data only; a fifth as many each for validation and test",
                    elem_id="train-demo-images",
                )
                image_size = setting_input("image_size", "Image size (px)", elem_id="train-size")
                recipe = gr.Radio(
                    list(RECIPES),
                    value=STABLE,
                    label="Recipe",
                    info="the paper's TSS-KD scaling collapses to a constant output when trained from scratch",
                    elem_id="train-recipe",
                )
                method = setting_input("method", "Method", elem_id="train-method")
                shown = config.applies(method.value)  # the default method's own settings; the rest hidden

                def method_input(name, label, **extra):
                    elem_id = "train-" + name.replace("_", "-")
                    return setting_input(name, label, visible=name in shown, elem_id=elem_id, **extra)

                with gr.Row():
                    t_target = method_input("t_target", "t_target")
                    t_nontarget = method_input("t_nontarget", "t_nontarget")
                    kd_weight = method_input("kd_weight", "KD weight")
                    ps_alpha = method_input("ps_alpha", "PS-KD final alpha", minimum=0, maximum=1)
                with gr.Row():
                    kd_scaling = method_input(
                        "kd_scaling",
                        "KD scaling",
                        info="nontarget: KL x t_nontarget² (stable); paper: KL x t_target² (as published)",
                    )
                    kd_warmup = method_input("kd_warmup", "KD warm-up (epochs)", minimum=0)
                stop_on_collapse = setting_input("stop_on_collapse", "Stop the run if it collapses")
                rga = setting_input("rga", "Regional gamma augmentation")
                arch = setting_input("arch", "Network")
                with gr.Row():
                    epochs = setting_input("epochs", "Epochs", elem_id="train-epochs")
                    batch_size = setting_input("batch_size", "Batch size")
                    lr = setting_input("lr", "Learning rate")
                optimizer = setting_input("optimizer", "Optimizer")
                device = setting_input("device", "Device", choices=device_choices, value=device_choices[0][1])
                processes = gr.Number(
                    1, precision=0, minimum=1, label="GPUs", info="more than one trains with torchrun on GPUs 0..N-1"
                )
                seed = setting_input("seed", "Seed")
                name = setting_input("name", "Run name (optional)", elem_id="train-name")
                start = gr.Button("Start", variant="primary", elem_id="train-start")
                estimate_md = gr.Markdown(elem_id="train-estimate")
                quick = gr.Button("Use the quick preset", visible=False, size="sm", elem_id="train-quick")
                reset = gr.Button("Reset the form to the defaults", size="sm", elem_id="train-reset")
            with gr.Column(scale=2):
                run_id = gr.Dropdown(
                    [],
                    value=None,
                    label="Run",
                    info="the run being watched (live runs first); Start picks the new one",
                    allow_custom_value=True,
                    elem_id="train-run",
                )
                with gr.Row():
                    # live only where they can act on the watched run (ui.watch.controls)
                    stop = gr.Button("Stop", interactive=False, elem_id="train-stop")
                    resume = gr.Button("Resume", interactive=False, elem_id="train-resume")
                    take = gr.Button("Use its settings", interactive=False, elem_id="train-take-settings")
                progress = gr.Markdown(elem_id="train-progress")
                warnings = gr.Markdown(elem_id="train-warnings", elem_classes=["studio-warning"])
                curves = gr.Plot(label="Curves", elem_id="train-curves")
                with gr.Accordion("Status (raw JSON, as /run_status returns it)", open=False):
                    status = gr.JSON(label="Status")
                with gr.Accordion("Settings of this run", open=False):
                    settings = gr.JSON(label="the settings it was started with", elem_id="train-run-settings")
                log = gr.Code(label="Log (last lines)", language=None, interactive=False)
        form = dict(source=source, data_path=data_path, image_size=image_size, method=method)
        form |= dict(t_target=t_target, t_nontarget=t_nontarget, kd_weight=kd_weight, rga=rga, arch=arch)
        form |= dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, device=device, seed=seed)
        form |= dict(name=name, demo_images=demo_images, processes=processes, kd_scaling=kd_scaling)
        form |= dict(kd_warmup=kd_warmup, stop_on_collapse=stop_on_collapse, recipe=recipe, ps_alpha=ps_alpha)
        # the preset the form's values came from when the quick button set them, recorded in the run as the
        # CLI's --preset quick is; the recipe switch sets its own
        form |= dict(started_from=gr.State(None))
        method_fields = [form[f] for f in config.METHOD_SETTINGS]

        def shown_with(values: dict) -> dict:  # the fields of the method put back, shown with it
            return {c: {"visible": v} for c, v in zip(method_fields, visible_for(values[method]), strict=True)}

        # a reload keeps what was typed
        keep_on_reload(ctx.kept, "train", list(form.values()), reset=reset, shape=shown_with)
        start.click(make_start(ctx, form), set(form.values()), run_id, api_name=False)
        gr.api(make_api(ctx), api_name="start_training")
        recipe.input(
            lambda r: [*recipe_values(r), None],
            recipe,
            [*[form[f] for f in RECIPE_FIELDS], form["started_from"]],
            api_name=False,
        )
        names = {component: name for name, component in form.items()}

        def update_estimate(values: dict):
            return estimate_text(ctx, {names[c]: v for c, v in values.items()})

        # triggers=None: on page load and whenever a field of the form changes (once, not per listener)
        gr.on(None, update_estimate, set(form.values()), [estimate_md, quick], api_name=False, show_progress="hidden")
        # every field of the quick preset (core.config), in the form's field that holds it
        quick.click(
            lambda: [*config.QUICK.values(), "quick"],
            None,
            [*[form[FORM_FIELD.get(k, k)] for k in config.QUICK], form["started_from"]],
            api_name=False,
        )
        # every change answered in order (a reload giving the kept method back as the page loads answers after
        # it, not dropped), so the fields shown are always those of the method shown; the estimate is the
        # change's always_last listener (ui.kept.IN_ORDER)
        method.change(shown_for, method, method_fields, api_name=False, show_progress="hidden", **IN_ORDER)
        gr.api(make_status(ctx), api_name="run_status")
        stop_api, resume_api = make_run_api(ctx)
        gr.api(stop_api, api_name="stop_training")
        gr.api(resume_api, api_name="resume_training")
        stop.click(make_control(ctx, "stop"), run_id, None, api_name=False)
        resume.click(make_control(ctx, "resume"), run_id, None, api_name=False)
        # the watched run's settings into the form, to start a run like it with a change
        take.click(make_take_settings(ctx, form, device_choices), run_id, list(form.values()), api_name=False)
        seen, known = gr.State(None), gr.State(None)
        watch = [progress, warnings, curves, log, status, settings, seen, stop, resume, take]
        poll(2, lambda r, s: monitor(ctx, r, s), [run_id, seen], watch)
        counted = gr.State(None)  # the watched run's end the estimate was last refreshed for

        def after_run(values: dict):
            form_values = {names[c]: v for c, v in values.items() if c in names}
            return estimate_after_run(ctx, form_values, values[status], values[counted])

        inputs = {*form.values(), status, counted}
        status.change(after_run, inputs, [estimate_md, quick, counted], api_name=False, show_progress="hidden")
        poll(3, lambda r, k: follow_runs(ctx, r, k), [run_id, known], [run_id, known])

        def on_load(request: gr.Request):
            return reopen(ctx, request)

        gr.on(None, on_load, None, [run_id, known], api_name=False, show_progress="hidden")
        # on page load and when the source changes: what the data folder holds of that kind, to pick
        # (the estimate is the source change's always_last listener: ui.kept.IN_ORDER)
        gr.on(
            None, lambda s: data_choices(ctx, s), source, data_path, api_name=False, show_progress="hidden", **IN_ORDER
        )
        run_id.change(None, run_id, None, js=address_js("run"), api_name=False)  # a reload comes back to it
        run_id.change(lambda r: monitor(ctx, r), run_id, watch, api_name=False, show_progress="hidden")
