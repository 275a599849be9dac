"""Runs tab: every run with its figures; compare curves; test metrics on demand; download; delete."""

from __future__ import annotations

import gradio as gr

from core import figures as plots
from core import listing, runs
from core.evaluate import evaluate_run
from core.export import export_run
from core.paths import confine
from ui import tables
from ui.context import Studio, address_js, all_from_address, from_address, poll, repick, user_error
from ui.kept import keep_on_reload
from ui.temperatures import make_stop_sweep, sweep_choices, sweep_runs_table, sweep_view

COLUMNS = list(listing.TABLE)


def _row(r: dict) -> list:
    """A run's row of the table; a queued run whose trainer is loading its data reads "starting"."""
    return [tables.cell(v) for v in listing.table_row(r)]


def table(ctx: Studio):
    rows = listing.list_runs(ctx.runs_dir)
    return [_row(r) for r in rows], gr.update(choices=[r["run"] for r in rows])


NO_RUNS = (
    "**No runs yet** in this runs folder. Start one in the **Train** tab (its quick preset trains in a few "
    "minutes on a CPU), or a sweep in **Temperatures**; from a shell, `make demo`. Runs started anywhere "
    "show up here by themselves."
)


def follow(ctx: Studio, last: list | None, selected: list | None, one: str | None):
    """The table, both run pickers and the hint shown while there are no runs, when the runs folder changed
    since `last` (nothing is sent otherwise): a run started anywhere appears, a deleted one leaves every
    picker."""
    rows = [_row(r) for r in listing.list_runs(ctx.runs_dir)]
    if rows == last:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    ids = [r[0] for r in rows]
    return rows, repick(ids, selected or []), repick(ids, one), rows, "" if rows else NO_RUNS


def reopen(ctx: Studio, request: gr.Request):
    """On page load: the table and pickers, with the runs compared and the run picked that the page's address
    names (?compare=A,B&inspect=C), so a reload comes back to them."""
    rows, selected, one, last, hint = follow(ctx, None, [], None)
    ids = [r[0] for r in rows]
    selected["value"] = all_from_address(request, "compare", ids)
    one["value"] = from_address(request, "inspect", ids)
    return rows, selected, one, last, hint


def make_list_runs(ctx: Studio):
    def list_runs() -> list[dict]:
        """Every run of the runs folder, newest first, with the fields of the Runs table and its test AUC
        (API: /list_runs; `python -m core.runs --json` prints the same)."""
        return listing.list_runs(ctx.runs_dir)

    return list_runs


def run_actions(run_id: str | None):
    """Evaluate, Calibration, Report, Download and Delete: live only while a run is picked."""
    return [gr.update(interactive=bool(run_id))] * 5


def compare(ctx: Studio, selected: list[str]):
    """Curves of the selected runs that still exist (one may have been deleted in another tab)."""
    chosen = [runs.Run(ctx.runs_dir / r) for r in selected or [] if "/" not in r and r not in ("", ".", "..")]
    chosen = [r for r in chosen if r.exists()]
    if not chosen:  # an empty plot, not three empty panels
        return None
    chances = {r.status().get("chance_acc") for r in chosen}  # marked when the runs share their data's
    return plots.live_curves(
        {r.name: r.metrics() for r in chosen}, chance_acc=chances.pop() if len(chances) == 1 else None
    )


def make_evaluate(ctx: Studio):
    @user_error
    def evaluate(run_id: str, split: str):
        result = evaluate_run(ctx.jobs.find(run_id), split=split, device="cpu")
        return tables.rounded(result), plots.confusion(result["confusion_matrix"], result["classes"])

    return evaluate


def make_calibration(ctx: Studio):
    @user_error
    def calibration_view(run_id: str, split: str):
        meta = runs.Run(ctx.jobs.find(run_id)).model_meta()
        record = meta.get("calibration")
        if not record:
            raise gr.Error("This run has no calibration yet (it is fitted when a run finishes).")
        summary = {k: record[k] for k in ("method", "fitted_on", "temperature")}
        summary[split] = {k: v for k, v in record[split].items() if not k.startswith("reliability")}
        return tables.rounded(summary), plots.reliability(record, split)

    return calibration_view


def make_report(ctx: Studio):
    @user_error
    def report(run_id: str):
        from core.report import build_report

        run = ctx.jobs.find(run_id)
        out = ctx.images.new_folder() / f"{run.name}-report.html"
        out.write_text(build_report(run), encoding="utf-8")
        return [str(out)]

    return report


def make_download(ctx: Studio):
    @user_error
    def download(run_id: str):
        run = ctx.jobs.find(run_id)
        files = [str(f) for f in export_run(run, ctx.images.new_folder())]
        if not files:
            raise gr.Error(f"{run.name} has nothing to download yet.")
        reason = runs.Run(run).unfinished()
        if reason and runs.Run(run).has_model():
            gr.Warning(
                f"{reason}. The model file says so: Diagnose will not take it, and core.predict warns on each answer."
            )
        return files

    return download


def revealed(make_files):
    """`make_files(run_id)`'s files in the files box, which then shows."""

    def files_shown(run_id: str) -> dict:
        return gr.update(value=make_files(run_id), visible=True)

    return files_shown


def make_delete(ctx: Studio):
    @user_error
    def delete(run_id: str, confirmed: bool, request: gr.Request = None):
        ctx.require_user(request)
        if not confirmed:
            raise gr.Error("Tick the confirmation box first: deleting a run cannot be undone.")
        run = confine(ctx.runs_dir, ctx.jobs.find(run_id).name)
        runs.delete_run(run)
        rows, choices = table(ctx)
        return rows, choices, False

    return delete


def build(ctx: Studio) -> None:
    with gr.Tab("Runs", id="runs"):
        hint = gr.Markdown(elem_id="runs-empty")
        rows = gr.Dataframe(
            headers=tables.headers(COLUMNS),
            column_widths=tables.widths(COLUMNS),
            value=table(ctx)[0],
            label="Runs (follows the runs folder)",
            interactive=False,
            elem_id="runs-table",
            wrap=True,
        )
        # allow_custom_value: a run deleted elsewhere must not make the pickers' own refresh fail validation
        selected = gr.Dropdown(
            [], multiselect=True, label="Compare runs", allow_custom_value=True, elem_id="runs-compare"
        )
        curves = gr.Plot(label="Curves of the selected runs", elem_id="runs-curves")
        with gr.Row():
            one = gr.Dropdown([], label="Run", allow_custom_value=True, elem_id="runs-one")
            split = gr.Radio(["val", "test"], value="test", label="Split", elem_id="runs-split")
        with gr.Row():
            evaluate = gr.Button("Evaluate", interactive=False, elem_id="runs-evaluate")
            calibration = gr.Button("Calibration", interactive=False)
            report = gr.Button("Report (HTML)", interactive=False)
            download = gr.Button("Download model and config", interactive=False)
        with gr.Row():
            metrics = gr.JSON(label="Metrics", elem_id="runs-metrics")
            confusion = gr.Plot(label="Confusion matrix or reliability diagram", elem_id="runs-confusion")
        # shown once it holds a report or a download: empty, it read as a box to upload into
        files = gr.File(
            label="Report and downloads", file_count="multiple", interactive=False, visible=False, elem_id="runs-files"
        )
        with gr.Accordion("Temperature sweeps", open=False):
            with gr.Row(equal_height=True):
                sweep = gr.Dropdown(
                    [], value=None, label="Sweep", allow_custom_value=True, elem_id="runs-sweep", scale=4
                )
                sweep_stop = gr.Button(
                    "Stop this sweep", variant="stop", elem_id="runs-sweep-stop", scale=1, interactive=False
                )
            sweep_table = sweep_runs_table("runs-sweep-table")  # the tab's width: every column fits
            sweep_heat = gr.Plot(label="Best validation AUC", elem_id="runs-sweep-heatmap")
            sweep_progress = gr.Markdown()
        with gr.Row():
            confirm = gr.Checkbox(False, label="Yes, delete this run and its files")
            delete = gr.Button("Delete run", variant="stop", interactive=False)

        gr.api(make_list_runs(ctx), api_name="list_runs")
        last = gr.State(None)
        pickers = [rows, selected, one, last, hint]
        actions = [evaluate, calibration, report, download, delete]
        one.change(run_actions, one, actions, api_name=False, show_progress="hidden")

        def on_load(request: gr.Request):
            return reopen(ctx, request)

        gr.on(None, on_load, None, pickers, api_name=False, show_progress="hidden")
        selected.change(None, selected, None, js=address_js("compare"), api_name=False)  # a reload comes back
        one.change(None, one, None, js=address_js("inspect"), api_name=False)
        poll(3, lambda lr, s, o: follow(ctx, lr, s, o), [last, selected, one], pickers)
        selected.change(lambda s: compare(ctx, s), selected, curves, api_name=False)
        sweep_seen, sweeps_known = gr.State(None), gr.State(None)
        sweep_out = [sweep_heat, sweep_progress, sweep_table, sweep_seen, sweep_stop]
        sweep.change(lambda t: sweep_view(ctx, t), sweep, sweep_out, api_name=False, show_progress="hidden")
        poll(3, lambda t, s: sweep_view(ctx, t, s), [sweep, sweep_seen], sweep_out)
        poll(3, lambda t, k: sweep_choices(ctx, t, k), [sweep, sweeps_known], [sweep, sweeps_known])
        sweep_stop.click(make_stop_sweep(ctx), sweep, None, api_name=False)
        evaluate.click(make_evaluate(ctx), [one, split], [metrics, confusion], api_name=False)
        calibration.click(make_calibration(ctx), [one, split], [metrics, confusion], api_name=False)
        download.click(revealed(make_download(ctx)), one, files, api_name=False)
        report.click(revealed(make_report(ctx)), one, files, api_name=False)
        keep_on_reload(ctx.kept, "runs", [split])  # the runs picked come back by the page's address
        delete.click(make_delete(ctx), [one, confirm], [rows, selected, confirm], api_name=False).then(
            lambda lr, s, o: follow(ctx, lr, s, o), [last, selected, one], pickers, api_name=False
        )
