"""Temperatures tab: what t_target and t_nontarget do to the soft targets, and a temperature sweep."""

from __future__ import annotations

import threading

import gradio as gr
import numpy as np

from core import figures as plots
from core import settings as config_io
from core.config import QUICK, DataConfig, TrainConfig
from core.errors import StudioError
from core.estimate import LONG_S
from core.imageio import read_scan
from core.losses import KD_SCALINGS
from core.sweep import (
    grid_results,
    list_sweeps,
    new_tag,
    parse_numbers,
    progress_text,
    set_by_the_sweep,
    stop_sweep,
    temperature_grid,
)
from core.temperature import temperature_view
from ui import tables
from ui.context import DEMO, Studio, address_js, follow_models, from_address, poll, repick, uploaded, user_error
from ui.form import whole
from ui.kept import keep_on_reload
from ui.train import confined, estimate_for, run_device, warmup_note
from ui.watch import duration

S_WARN = 10  # s above this: warn that training from scratch is likely to collapse
SWEEP_WARMUP = QUICK["kd_warmup"]  # a sweep's runs are short, as the quick preset's
SWEEP_BATCH = QUICK["batch_size"]  # and learn at its small batch (core.config.PRESETS says why)
SWEEP_IMAGES = 2000  # demo training images per run (validation and test: a fifth of it each)
NOT_KNOWN = "not known yet"  # the estimate's words when nothing was measured and no trial steps could run
_NAMING = threading.Lock()  # a new sweep's name is taken and its runs made under it

EXPLAIN = """
**Reading the plot.** Classic knowledge distillation softens every class with one temperature
(`t_target`). TSS-KD keeps that temperature for the target class but uses a much lower one for the
other classes (`t_nontarget`), which *sharpens* the differences between the wrong classes: the
student is taught which mistakes the teacher finds more plausible. The distillation term is
`S · KL(teacher ‖ student)` under these temperatures, with `S = t_nontarget²` (nontarget scaling, the
studio's default) or `S = t_target²` (paper scaling, as published); it splits exactly into the target
class's share and the other classes' share shown below. The total loss is cross-entropy plus the KD
weight times the distillation term.

**s** is the term's curvature on the wrong classes' logits relative to classic KD:
`KD weight · S / t_nontarget²`. Classic KD has s = 1. At the paper's settings (4 / 0.4, weight 1,
paper scaling) s = 100, and a network trained from scratch satisfies the term with a constant output.
"""


def curvature_note(s: float) -> tuple[str, str]:
    """The lines above the plot: s, and (shown in red) a warning when it is far above classic KD's 1."""
    warning = ""
    if s > S_WARN:
        warning = (
            f"**Warning:** the distillation term is {s:.3g} times as stiff as classic KD's; trained from scratch "
            "such a run collapses to a constant output. Use the nontarget scaling or a smaller KD weight."
        )
    return f"**s = {s:.3g}** (classic KD: 1)", warning


def sweep_values(targets_text: str, nontargets_text: str) -> tuple[list[float], list[float]]:
    """The sweep form's two fields of temperatures, read as the command line and the API read them."""
    return parse_numbers(targets_text, "t_target values"), parse_numbers(nontargets_text, "t_nontarget values")


def make_explain(ctx: Studio):
    @user_error
    def explain(student_text, teacher_text, target, t_target, t_nontarget, kd_weight, class_text, scaling):
        student, teacher = parse_numbers(student_text, "student logits"), parse_numbers(teacher_text, "teacher logits")
        view = temperature_view(
            student,
            teacher,
            int(target),
            t_target=t_target,
            t_nontarget=t_nontarget,
            kd_weight=kd_weight,
            scaling=scaling,
        )
        names = [c.strip() for c in class_text.split(",")] if class_text.strip() else []
        classes = names if len(names) == len(student) else [str(i) for i in range(len(student))]
        fig = plots.distributions(
            classes,
            {
                f"teacher, KD (T={t_target:g})": view["teacher_kd"],
                f"teacher, TSS-KD ({t_target:g}/{t_nontarget:g})": view["teacher_tss"],
                "student, TSS-KD": view["student_tss"],
                "student (T=1)": view["student_plain"],
            },
            int(target),
        )
        losses = {
            k: round(view[k], 6)
            for k in ("ce", "kd_single_temperature", "tss_kd", "tss_target_part", "tss_nontarget_part", "total")
        }
        return fig, losses, *curvature_note(view["curvature_s"])

    return explain


def make_from_image(ctx: Studio):
    @user_error
    def from_image(upload, model, seed):
        if not upload:
            raise StudioError("upload an image first.")
        predictor = ctx.predictor(model)
        teacher, student = predictor.view_logits(read_scan(uploaded(upload)[0]), seed=int(seed))
        target = int(np.argmax(teacher))
        fmt = ", ".join
        return (
            fmt(f"{v:.3f}" for v in student),
            fmt(f"{v:.3f}" for v in teacher),
            target,
            ", ".join(predictor.classes),
        )

    return from_image


def sweep_base(
    ctx: Studio, epochs, device, image_size, scaling, warmup, images=SWEEP_IMAGES, batch=SWEEP_BATCH
) -> TrainConfig:
    """The settings every run of a sweep shares: short TSS-KD runs on `images` demo training images."""
    data = DataConfig(
        image_size=whole(image_size, "Image size"), synthetic_train=whole(images, "Training images per run")
    )
    return TrainConfig(
        data=data,
        epochs=whole(epochs, "Epochs per run"),
        device=device,
        runs_dir=str(ctx.runs_dir),
        kd_scaling=scaling,
        kd_warmup=whole(warmup, "KD warm-up (epochs)"),
        batch_size=whole(batch, "Batch size"),
        optimizer=QUICK["optimizer"],  # short runs learn with the quick preset's optimizer (core.config.PRESETS)
        lr=QUICK["lr"],
    )


def make_sweep(ctx: Studio):
    @user_error
    def sweep(
        targets_text,
        nontargets_text,
        epochs,
        device,
        image_size,
        scaling=TrainConfig.kd_scaling,
        warmup=SWEEP_WARMUP,
        images=SWEEP_IMAGES,
        batch=SWEEP_BATCH,
        request: gr.Request = None,
    ):
        ctx.require_user(request)
        targets, nontargets = sweep_values(targets_text, nontargets_text)
        base = sweep_base(ctx, epochs, device, image_size, scaling, warmup, images, batch)
        return queue_sweep(ctx, base, targets, nontargets)

    return sweep


def queue_sweep(ctx: Studio, base: TrainConfig, targets: list[float], nontargets: list[float]) -> str:
    """Name a new sweep and queue its runs (one per temperature pair, `base` for the rest) as one grid, trained
    in one process; returns its name."""
    with _NAMING:  # two tabs queueing at once must not both take the next number
        tag = new_tag(ctx.runs_dir)
        ctx.jobs.submit_grid(temperature_grid(base, targets, nontargets, tag=tag))
    return tag


def _listed(value, what: str) -> list[float]:
    """A sweep's temperatures as the API takes them: a JSON list of numbers, or text as the tab's fields."""
    if isinstance(value, str):
        return parse_numbers(value, what)
    if isinstance(value, list) and value and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return [float(v) for v in value]
    raise StudioError(f'"{what}" takes a list of numbers, such as [2, 4, 8].')


def make_sweep_api(ctx: Studio) -> tuple:
    """The API's sweeps: /start_sweep queues one as the tab's Queue sweep does, from settings as /start_training
    takes them; /stop_sweep stops it as the tab's button does."""

    @user_error
    def start_sweep(settings: dict, request: gr.Request = None) -> str:
        """Queue a temperature sweep (API: /start_sweep): one TSS-KD run per pair of "t_targets" and
        "t_nontargets" (lists of numbers), trained together in one process; every other setting by name as
        /start_training takes them ("preset": "quick" for short runs), the rest defaulted. Returns the sweep's
        name; its runs are named <sweep>-T<t_target>-t<t_nontarget>-<time>."""
        ctx.require_user(request)
        if not isinstance(settings, dict):
            raise StudioError('give the sweep as one JSON object: {"t_targets": [2, 4], "t_nontargets": [0.4, 4]}.')
        settings = dict(settings)
        targets = _listed(settings.pop("t_targets", None), "t_targets")
        nontargets = _listed(settings.pop("t_nontargets", None), "t_nontargets")
        wrong = set_by_the_sweep(settings) + (["like"] if "like" in settings else [])
        if wrong:
            raise StudioError(
                'a sweep trains TSS-KD at each pair of "t_targets" and "t_nontargets" and names its runs itself; '
                f"leave out {', '.join(repr(k) for k in wrong)}."
            )
        base = config_io.from_settings(settings, base=TrainConfig(runs_dir=str(ctx.runs_dir)))
        return queue_sweep(ctx, confined(ctx, base), targets, nontargets)

    @user_error
    def stop_a_sweep(sweep: str, request: gr.Request = None) -> list[str]:
        """Stop every queued or running run of a sweep (API: /stop_sweep), as the tab's button does: each stops
        after its current step and can be resumed alone (/resume_training). Returns the runs asked to stop."""
        ctx.require_user(request)
        return stop_sweep(ctx.jobs, sweep)

    return start_sweep, stop_a_sweep


def sweep_estimate(
    ctx: Studio,
    targets_text,
    nontargets_text,
    epochs,
    device,
    image_size,
    scaling,
    warmup,
    images=SWEEP_IMAGES,
    batch=SWEEP_BATCH,
) -> str:
    """The time the sweep the form describes would take (its runs train one after another in one process),
    from the speed measured or probed for one of its runs (core.estimate); what Queue sweep would refuse while
    the form is invalid (an emptied field too), as the Train tab's estimate names a wrong data path."""
    try:
        targets, nontargets = sweep_values(targets_text, nontargets_text)
        base = sweep_base(ctx, epochs, device, image_size, scaling, warmup, images, batch)
        grid = temperature_grid(base, targets, nontargets, tag="")
    except (StudioError, gr.Error) as e:
        return f"**Not a sweep yet:** {e}"
    except (TypeError, ValueError):
        return ""
    n, cfg = len(grid), grid[0]
    where, found = estimate_for(ctx, cfg)
    runs_, epochs = f"{n} run{'s' if n != 1 else ''}", f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}"
    what = f"{runs_} of {epochs} x {cfg.data.synthetic_train:,} images"
    if found is None:
        return f"{what}; time on {where} {NOT_KNOWN} (the first run measures it)." + warmup_note(cfg)
    speed = f"{found['images_per_s']:.0f} images/s"
    text = f"{what}: **about {duration(n * found['seconds'])}** on {where} ({speed})."
    if n * found["seconds"] > LONG_S:  # as the Train tab says of a long run, with what shortens it
        text += (
            f" That is long: each run takes about {duration(found['seconds'])}; fewer pairs, epochs or "
            "training images shorten it in proportion."
        )
    return text + warmup_note(cfg)


def refresh_estimate(ctx: Studio, shown: str | None, targets, nontargets, epochs, device, *rest):
    """An estimate that could not be made on a CPU while a run trained (no trial steps then: they would slow
    it) is made once no run trains, without waiting for a field of the form to change; else nothing changes.
    The form's fields follow `shown` in `sweep_estimate`'s order."""
    if not shown or NOT_KNOWN not in shown or ctx.jobs.active() or run_device(device) != "cpu":
        return gr.skip()
    return sweep_estimate(ctx, targets, nontargets, epochs, device, *rest)


def make_stop_sweep(ctx: Studio):
    @user_error
    def stop(tag, request: gr.Request = None):
        ctx.require_user(request)
        if not tag:
            raise StudioError("choose a sweep to stop.")
        asked = stop_sweep(ctx.jobs, tag)
        gr.Info(f"Stopping {len(asked)} run(s) of {tag}; each can be resumed alone from the Train tab.")

    return stop


SWEEP_COLUMNS = ["run", "status", "t_target", "t_nontarget", "best_val_auc", "best_val_acc", "warnings"]


def sweep_runs_table(elem_id: str) -> gr.Dataframe:
    """A sweep's runs as a table (in this tab and in Runs): its columns' headers in words, sized to fit."""
    return gr.Dataframe(
        headers=tables.headers(SWEEP_COLUMNS),
        column_widths=tables.widths(SWEEP_COLUMNS),
        wrap=True,
        label="Its runs",
        interactive=False,
        elem_id=elem_id,
    )


def sweep_view(ctx: Studio, tag: str | None, seen: list | None = None):
    """A sweep's heatmap, progress line and runs table, read from its run folders, and its Stop button, live
    only while some of its runs are queued or running; nothing is sent (and nothing redrawn) when its runs
    have not changed since `seen`. Returns (heatmap, progress, table, seen, stop button)."""
    rows = grid_results(ctx.runs_dir, tag)[3] if tag else []
    table = [[tables.cell(r[c]) for c in SWEEP_COLUMNS] for r in rows]
    if seen is not None and table == seen:
        return gr.skip(), gr.skip(), gr.skip(), seen, gr.skip()
    fig, progress = sweep_heatmap(ctx, tag)
    live = any(r["status"] in ("queued", "running") for r in rows)
    return fig, progress, table, table, gr.update(interactive=live)


def sweep_choices(ctx: Studio, tag: str | None, known: list | None):
    """The sweep picker's names when a sweep was added or removed; the picked one stays while it exists."""
    names = [s["sweep"] for s in list_sweeps(ctx.runs_dir)]
    if names == known:
        return gr.skip(), known
    return repick(names, tag), names


def reopen_sweep(ctx: Studio, request: gr.Request):
    """On page load: the sweep named in the page's address (?sweep=TAG), so a reload comes back to it."""
    names = [s["sweep"] for s in list_sweeps(ctx.runs_dir)]
    return gr.update(choices=names, value=from_address(request, "sweep", names)), names


def sweep_heatmap(ctx: Studio, tag: str):
    if not tag:
        return None, ""
    tts, tns, grid, rows = grid_results(ctx.runs_dir, tag)
    if not rows:
        return None, ""
    done = sum(r["status"] == "done" for r in rows)
    fig = plots.heatmap(
        tts,
        tns,
        grid,
        row_label="t_target",
        col_label="t_nontarget",
        title=f"best validation AUC ({done}/{len(rows)} runs done)",
    )
    return fig, progress_text(rows)


def build(ctx: Studio, device_choices) -> None:
    with gr.Tab("Temperatures", id="temperatures"):
        with gr.Row():
            with gr.Column(scale=1):
                t_target = gr.Slider(0.1, 10, value=4.0, step=0.1, label="t_target (target class)")
                t_nontarget = gr.Slider(0.05, 10, value=0.4, step=0.05, label="t_nontarget (other classes)")
                kd_weight = gr.Slider(0, 5, value=1.0, step=0.05, label="KD weight (lambda)")
                scaling = gr.Radio(
                    list(KD_SCALINGS), value=TrainConfig.kd_scaling, label="KD scaling", elem_id="temps-scaling"
                )
                student = gr.Textbox("2.0, 0.5, -1.0, 0.3", label="Student logits")
                teacher = gr.Textbox("1.5, 0.8, -0.5, 0.1", label="Teacher logits")
                target = gr.Number(0, precision=0, label="Target class (index)")
                classes = gr.Textbox("normal, nodule, mass, ring", label="Class names")
                with gr.Accordion("Take the logits from an image", open=False):
                    upload = gr.File(label="Image", type="filepath")
                    model = gr.Dropdown(ctx.model_choices(), value=DEMO, label="Model", allow_custom_value=True)
                    seed = gr.Number(0, precision=0, label="Seed of the two views")
                    take = gr.Button("Use this image's logits")
            with gr.Column(scale=2):
                first = make_explain(ctx)(
                    student.value, teacher.value, 0, 4.0, 0.4, 1.0, classes.value, TrainConfig.kd_scaling
                )
                curvature = gr.Markdown(first[2], elem_id="temps-curvature")
                stiff = gr.Markdown(first[3], elem_id="temps-curvature-warning", elem_classes=["studio-warning"])
                plot = gr.Plot(first[0], label="Soft targets")
                losses = gr.JSON(first[1], label="Loss for this sample")
                gr.Markdown(EXPLAIN)
        inputs = [student, teacher, target, t_target, t_nontarget, kd_weight, classes, scaling]
        explain = make_explain(ctx)
        for control in (t_target, t_nontarget, kd_weight, student, teacher, target, classes, scaling):
            control.change(explain, inputs, [plot, losses, curvature, stiff], api_name=False)
        follow_models(ctx, [model])
        take.click(
            make_from_image(ctx), [upload, model, seed], [student, teacher, target, classes], api_name=False
        ).then(explain, inputs, [plot, losses, curvature, stiff], api_name=False)

        gr.Markdown(
            "### Temperature sweep\nQueues one short TSS-KD run on the demo data per pair of "
            "temperatures and fills the heatmap with each run's best validation AUC as it finishes. Short runs "
            f"train as the quick preset's do, with {QUICK['optimizer'].capitalize()} at {QUICK['lr']:g}. The best "
            "cell is outlined, but read it with the noise in mind: at the default size a run's AUC moves by about "
            "0.01 with its seed alone (8 seeds of the quick preset: 0.903 to 0.926), so cells closer than that "
            "are a tie."
        )
        with gr.Row():
            sweep_t = gr.Textbox("2, 4, 8", label="t_target values", elem_id="sweep-targets")
            sweep_n = gr.Textbox("0.2, 0.4, 1, 4", label="t_nontarget values", elem_id="sweep-nontargets")
            sweep_epochs = gr.Number(5, precision=0, label="Epochs per run", elem_id="sweep-epochs")
            sweep_size = gr.Number(32, precision=0, label="Image size", elem_id="sweep-size")
            sweep_device = gr.Dropdown(device_choices, value=device_choices[0][1], label="Device")
            sweep_scaling = gr.Dropdown(list(KD_SCALINGS), value=TrainConfig.kd_scaling, label="KD scaling")
            # short runs: no warm-up by default, as the quick preset (core.config.PRESETS says why)
            sweep_warmup = gr.Number(
                SWEEP_WARMUP, precision=0, minimum=0, label="KD warm-up (epochs)", elem_id="sweep-warmup"
            )
            sweep_images = gr.Number(
                SWEEP_IMAGES, precision=0, minimum=1, label="Training images per run", elem_id="sweep-images"
            )
            sweep_batch = gr.Number(SWEEP_BATCH, precision=0, minimum=2, label="Batch size", elem_id="sweep-batch")
            start = gr.Button("Queue sweep", elem_id="sweep-start")
        sweep_time = gr.Markdown(elem_id="sweep-estimate")
        with gr.Row(equal_height=True):
            tag = gr.Dropdown(
                [s["sweep"] for s in list_sweeps(ctx.runs_dir)],
                value=None,
                label="Sweep (queue one, or reopen an earlier one by name)",
                allow_custom_value=True,
                elem_id="sweep-tag",
                scale=4,
            )
            stop = gr.Button("Stop this sweep", variant="stop", elem_id="sweep-stop", scale=1, interactive=False)
        heat = gr.Plot(label="Validation AUC", elem_id="sweep-heatmap")
        progress = gr.Markdown(elem_id="sweep-progress")
        sweep_form = [sweep_t, sweep_n, sweep_epochs, sweep_device, sweep_size]
        sweep_form += [sweep_scaling, sweep_warmup, sweep_images, sweep_batch]
        keep_on_reload(ctx.kept, "temperatures", inputs)  # a reload of the page keeps both forms
        keep_on_reload(ctx.kept, "sweep", sweep_form)
        start.click(make_sweep(ctx), sweep_form, tag, api_name=False)
        stop.click(make_stop_sweep(ctx), tag, None, api_name=False)
        start_api, stop_api = make_sweep_api(ctx)
        gr.api(start_api, api_name="start_sweep")
        gr.api(stop_api, api_name="stop_sweep")
        # triggers=None: on page load and whenever a field of the sweep's form changes
        gr.on(
            None,
            lambda *v: sweep_estimate(ctx, *v),
            sweep_form,
            sweep_time,
            api_name=False,
            show_progress="hidden",
        )
        poll(5, lambda s, *v: refresh_estimate(ctx, s, *v), [sweep_time, *sweep_form], [sweep_time])
        seen, known = gr.State(None), gr.State(None)
        sweep_runs = sweep_runs_table("sweep-runs")
        shown = [heat, progress, sweep_runs, seen, stop]
        poll(3, lambda t, s: sweep_view(ctx, t, s), [tag, seen], shown)
        poll(3, lambda t, k: sweep_choices(ctx, t, k), [tag, known], [tag, known])
        tag.change(lambda t: sweep_view(ctx, t), tag, shown, api_name=False, show_progress="hidden")
        tag.change(None, tag, None, js=address_js("sweep"), api_name=False)  # a reload comes back to it

        def on_load(request: gr.Request):
            return reopen_sweep(ctx, request)

        gr.on(None, on_load, None, [tag, known], api_name=False, show_progress="hidden")
        # its runs' table changes as they end: the estimate goes by the speed and times they measured from then on
        sweep_runs.change(
            lambda *v: sweep_estimate(ctx, *v), sweep_form, sweep_time, api_name=False, show_progress="hidden"
        )
