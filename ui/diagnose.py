"""Diagnose tab (clinicians): scans in, class probabilities, a lesion map with its box, before/after."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from core.cam import CAM_METHODS
from ui.context import Studio, user_error

PREDICTED = "predicted class"
TABLE_HEADERS = ["file", "prediction", "confidence", "note", "lesion box (y0, x0, y1, x1)", "read as"]


def _note(r: dict) -> str:
    parts = ["calibrated" if r["calibrated"] else "uncalibrated"]
    if r["low_confidence"]:
        parts.append("LOW CONFIDENCE: review")
    return ", ".join(parts)


def _files(files) -> list[str]:
    if not files:
        raise gr.Error("Upload one or more scans first.")
    items = files if isinstance(files, list) else [files]
    return [f if isinstance(f, str) else f.name for f in items]


def _read_as(info: dict) -> str:
    parts = [info.get("format", "?")]
    if info.get("format") == "DICOM":
        parts.append(f"modality {info.get('modality')}")
        w = info.get("window")
        parts.append(f"window {w['center']:g}/{w['width']:g}" if isinstance(w, dict) else f"window: {w}")
    size = info.get("size")
    if size:
        parts.append(f"{size[0]}x{size[1]}")
    return ", ".join(parts)


def make_diagnose(ctx: Studio):
    @user_error
    def diagnose(files, model: str, method: str, target: str, opacity: float):
        """Probabilities, lesion map and box for each uploaded scan (API: /diagnose)."""
        predictor = ctx.predictor(model)
        wanted = None if target in (None, "", PREDICTED) else target
        results = [
            (Path(f).name, predictor.diagnose(f, method=method, target=wanted, opacity=opacity)) for f in _files(files)
        ]
        first = results[0][1]
        table = [
            [
                name,
                r["predicted"],
                round(r["confidence"], 4),
                _note(r),
                str(r["lesion_box"]) if r["lesion_box"] else "none (empty map)",
                _read_as(r["scan"]),
            ]
            for name, r in results
        ]
        gallery = [(r["overlay"], f"{name}: {r['predicted']} ({r['confidence']:.0%})") for name, r in results]
        details = {
            name: {
                "probabilities": r["probabilities"],
                "calibrated_probabilities": r["calibrated"],
                "low_confidence": r["low_confidence"],
                "lesion_box": r["lesion_box"],
                "map_of": r["target"],
                "method": r["method"],
                "scan": r["scan"],
            }
            for name, r in results
        }
        return (first["probabilities"], first["overlay"], (first["image"], first["overlay"]), table, gallery, details)

    return diagnose


def build(ctx: Studio) -> None:
    with gr.Tab("Diagnose", id="diagnose"):
        gr.Markdown(
            "Upload scans (PNG, JPEG, TIFF, BMP or DICOM, with or without extension) to get class "
            "probabilities and a lesion map. Patient details in DICOM files are never shown or kept."
        )
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Scans", file_count="multiple", type="filepath", elem_id="diagnose-files")
                model = gr.Dropdown(ctx.model_choices(), value="demo", label="Model")
                refresh = gr.Button("Refresh model list", size="sm")
                method = gr.Dropdown(list(CAM_METHODS), value="gradcam", label="Lesion-map method")
                target = gr.Dropdown([PREDICTED], value=PREDICTED, label="Map the evidence for")
                opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Map opacity")
                run = gr.Button("Diagnose", variant="primary", elem_id="diagnose-run")
            with gr.Column(scale=2):
                probs = gr.Label(
                    label="Class probabilities (first scan; calibrated when the model is, see the table's note)",
                    num_top_classes=10,
                    elem_id="diagnose-probs",
                )
                with gr.Row():
                    overlay = gr.Image(
                        label="Lesion map and box",
                        type="numpy",
                        format="png",
                        interactive=False,
                        elem_id="diagnose-overlay",
                    )
                    slider = gr.ImageSlider(label="Before / after", type="numpy", format="png", interactive=False)
                table = gr.Dataframe(headers=TABLE_HEADERS, label="All scans", interactive=False)
                gallery = gr.Gallery(label="Lesion maps", columns=4, format="png", height=320)
                details = gr.JSON(label="Details")

        def classes_for(choice):
            try:
                names = ctx.predictor(choice).classes
            except Exception:  # an unreadable model shows its error when used
                names = []
            return gr.update(choices=[PREDICTED, *names], value=PREDICTED)

        refresh.click(lambda: gr.update(choices=ctx.model_choices()), outputs=model, api_name=False)
        model.change(classes_for, model, target, api_name=False)
        run.click(
            make_diagnose(ctx),
            [files, model, method, target, opacity],
            [probs, overlay, slider, table, gallery, details],
            api_name="diagnose",
        )
