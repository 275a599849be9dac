"""Augment tab (researchers): regional gamma augmentation previews with their exact parameters."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from core.config import whole_number
from core.imageio import Scan, read_scan
from core.preview import rga_explicit, rga_samples, training_views
from core.synthetic import render
from ui.context import ASSETS, EXAMPLES, Studio, uploaded, user_error
from ui.kept import keep_on_reload


def _scan(upload, example: str | None, demo_index: int) -> Scan:
    if upload:
        return read_scan(uploaded(upload)[0])
    if example:
        return read_scan(ASSETS / "examples" / Path(example).name)
    images, _, _ = render(1, size=128, seed=whole_number(demo_index, "demo scan number", low=0))
    return Scan(images[0, 0].numpy(), {"format": "demo"})


def make_preview(ctx: Studio):
    @user_error
    def augment_preview(
        upload=None,
        example=None,
        demo_index=0,
        mode="random",
        gamma_min=0.5,
        gamma_max=2.0,
        max_side=0.71,
        seed=0,
        count=8,
        gamma=2.0,
        top=0.25,
        left=0.25,
        bottom=0.75,
        right=0.75,
        view_size=64,
    ):
        """RGA samples (random or explicit) and the two training views of one image (API: /augment_preview)."""
        scan = _scan(upload, example, demo_index)
        if mode == "explicit":
            samples = [rga_explicit(scan, gamma=gamma, box=(top, left, bottom, right))]
        else:
            samples = rga_samples(
                scan, count=int(count), seed=seed, gamma_range=(gamma_min, gamma_max), max_side=max_side
            )
        views = training_views(scan, size=int(view_size), seed=seed, gamma_range=(gamma_min, gamma_max))
        return samples, views

    return augment_preview


def build(ctx: Studio) -> None:
    with gr.Tab("Augment", id="augment"):
        gr.Markdown(
            "Regional gamma augmentation: inside a random box, intensities in [0, 1] are raised to a "
            "random power. Each picture is labelled with the exact gamma and box (y0, x0, y1, x1, "
            "end-exclusive) that made it; the same seed gives the same pictures."
        )
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Your image (optional)", type="filepath")
                example = gr.Dropdown([p.name for p in EXAMPLES], value=None, label="or an example image")
                demo_index = gr.Number(0, precision=0, label="or demo scan number")
                mode = gr.Radio(["random", "explicit"], value="random", label="Mode")
                with gr.Group():
                    gamma_min = gr.Slider(0.1, 4, value=0.5, step=0.05, label="Gamma, lowest")
                    gamma_max = gr.Slider(0.1, 4, value=2.0, step=0.05, label="Gamma, highest")
                    max_side = gr.Slider(0.05, 1, value=0.71, step=0.01, label="Largest box side (fraction)")
                    seed = gr.Number(0, precision=0, label="Seed", elem_id="augment-seed")
                    count = gr.Slider(1, 24, value=8, step=1, label="Samples")
                with gr.Accordion("Explicit parameters", open=False):
                    gamma = gr.Slider(0.1, 4, value=2.0, step=0.05, label="Gamma")
                    top = gr.Slider(0, 1, value=0.25, step=0.01, label="Box top")
                    left = gr.Slider(0, 1, value=0.25, step=0.01, label="Box left")
                    bottom = gr.Slider(0, 1, value=0.75, step=0.01, label="Box bottom")
                    right = gr.Slider(0, 1, value=0.75, step=0.01, label="Box right")
                view_size = gr.Slider(16, 256, value=64, step=8, label="Training view size (px)")
                run = gr.Button("Preview", variant="primary", elem_id="augment-run")
            with gr.Column(scale=2):
                samples = gr.Gallery(label="RGA samples", columns=4, format="png", elem_id="augment-samples")
                views = gr.Gallery(
                    label="The two views a training step sees", columns=2, format="png", elem_id="augment-views"
                )
        form = [
            upload,
            example,
            demo_index,
            mode,
            gamma_min,
            gamma_max,
            max_side,
            seed,
            count,
            gamma,
            top,
            left,
            bottom,
            right,
            view_size,
        ]
        keep_on_reload(ctx.kept, "augment", form[1:])  # the settings, not the upload, kept across a reload
        preview = make_preview(ctx)
        run.click(preview, form, [samples, views], api_name="augment_preview")
        # Live: drawn on page load and again whenever a setting changes (the newest change wins), so the tab
        # never opens empty and a slider shows its effect without a click.
        gr.on(None, preview, form, [samples, views], api_name=False, show_progress="hidden", trigger_mode="always_last")
