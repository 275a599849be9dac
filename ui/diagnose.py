"""Diagnose tab (clinicians): scans in, class probabilities with how far to trust them, a lesion map, a model card."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from core import answers, archive
from core.cam import CAM_METHODS
from core.errors import StudioError
from core.infer import redraw, scan_hw
from core.trust import OOD_MESSAGE, untrusted
from ui import tables
from ui.context import DEMO, EXAMPLES, Studio, address_js, follow_models, from_address, uploaded, user_error
from ui.kept import keep_on_reload
from ui.watch import duration

PREDICTED = "predicted class"
# The All scans table's columns and the pixels each needs in the tab's width (ui.tables.widths makes them shares)
TABLE = {"file": 130, "prediction": 90, "confidence": 90, "trust": 150, "OOD score (1 = threshold)": 100}
TABLE |= {"calibration": 100, "lesion map for": 100, "lesion box (y0, x0, y1, x1)": 90, "read as": 150}
TABLE_HEADERS = list(TABLE)
RESEARCH_USE = (
    "**A research tool, not a medical device**: its answers are not a diagnosis. The demo model is trained on "
    "synthetic demo data (shapes in generated texture), for trying the studio only."
)
DESCRIPTION = (
    "Class probabilities, whether the scan is like the model's training data (in_distribution, ood_score, "
    "mismatch), and a lesion map for each uploaded scan (a ZIP archive stands for the scans in it). Only the "
    "files are required; model is 'demo', any finished run's id, or the name of a model file in the models "
    "folder ('NAME.safetensors'), target any class of that model. A research tool, not a medical device; the "
    "demo model is trained on synthetic demo data, for trying the studio only."
)
GREYED = "studio-greyed"
TABLE_FILE = "diagnosis.csv"  # named for what it is, never after a scan


def _trust(r: dict) -> str:
    if not r["model_learned"]:
        return "MODEL DID NOT LEARN: do not trust"
    if r["in_distribution"] is False:
        why = f" ({r['mismatch']})" if r["mismatch"] else ""
        return f"OUT OF DISTRIBUTION{why}: {OOD_MESSAGE.split(': ', 1)[1]}"
    if r["low_confidence"]:
        return "LOW CONFIDENCE: review"
    return "no check for this model" if r["in_distribution"] is None else "like the training data"


def demo_scans() -> list[tuple[str, list[str]]]:
    """The demo scan buttons: each scan by its class, then all of them."""
    each = [(p.stem.removeprefix("demo-"), [str(p)]) for p in EXAMPLES]
    return each + [(f"all {len(EXAMPLES)}" if len(EXAMPLES) != 4 else "all four", [str(p) for p in EXAMPLES])]


def _files(files) -> list[str]:
    paths = uploaded(files)
    if not paths:
        raise gr.Error("Upload one or more scans first.")
    return paths


def _read_as(info: dict) -> str:
    parts = [info.get("format", "?")]
    if info.get("format") == "DICOM":
        parts.append(f"modality {info.get('modality')}")
        if info.get("compression"):
            parts.append(info["compression"])
        w = info.get("window")
        parts.append(f"window {w['center']:g}/{w['width']:g}" if isinstance(w, dict) else f"window: {w}")
    size = info.get("size")
    if size:
        parts.append(f"{size[0]}x{size[1]}")
    if info.get("frames"):  # a series in one file: say which image was diagnosed
        parts.append(f"frame {answers.frame_text(info)}")
    if info.get("burned_in_annotation"):
        parts.append("text burned into the pixels")
    return ", ".join(parts)


def percent(p: float, decimals: int = 0) -> str:
    """A probability as a percentage that never reads as certain: a probability short of 1 that would round
    to 100% reads ">99%" (">99.9%" with one decimal), one above 0 that would round to 0% reads "<1%" ("<0.1%").
    The demo model gives its own mass scan 0.99994, which a plain rounding shows as "100%". The browser's
    probability bars say the same (assets/studio.js)."""
    text = f"{p:.{decimals}%}"
    step = 10.0**-decimals
    if p < 1 and text == f"{1:.{decimals}%}":
        return f">{100 - step:.{decimals}f}%"
    if p > 0 and text == f"{0:.{decimals}%}":
        return f"<{step:.{decimals}f}%"
    return text


def _caption(name: str, r: dict) -> str:
    head = f"{name}: {r['predicted']} ({percent(r['confidence'])})"
    if r["in_distribution"] is False:
        head = f"{name}: NOT LIKE THE TRAINING DATA ({r['predicted']} {percent(r['confidence'])}, do not trust)"
    return f"{head}; map for: {r['target']}, {percent(r['target_probability'])}"


def _box(r: dict) -> str:
    """The lesion box, or why there is none: the weightiest reason first (an answer not to be trusted gets no
    box whatever its class)."""
    if r["lesion_box"]:
        return str(r["lesion_box"])
    if untrusted(r):
        return "none (answer not to be trusted)"
    if r["target_no_finding"]:
        return f"none ('{r['target']}' is no finding)"
    return "none (empty map)"


def _row(name: str, r: dict) -> list:
    if "error" in r:
        return [name, "", "", f"NOT READ: {r['error']}", "", "", "", "", ""]
    return [
        name,
        r["predicted"],
        percent(r["confidence"], 1),
        _trust(r),
        "" if r["ood_score"] is None else f"{r['ood_score']:.2f}",
        "calibrated" if r["calibrated"] else "uncalibrated",
        f"{r['target']} ({percent(r['target_probability'])})",
        _box(r),
        _read_as(r["scan"]),
    ]


def _detail(name: str, r: dict) -> dict:
    if "error" in r:
        return {"file": name, "error": r["error"]}
    keys = (
        "predicted",
        "confidence",
        "probabilities",
        "calibrated",
        "model_learned",
        "low_confidence",
        "in_distribution",
    )
    return {
        "file": name,
        **{k: r[k] for k in keys},
        "ood_score": r["ood_score"],
        "mismatch": r["mismatch"],
        "warnings": r["warnings"],
        "lesion_box": r["lesion_box"],
        "map_of": r["target"],
        "map_of_no_finding": r["target_no_finding"],
        "method": r["method"],
        "scan": r["scan"],
    }


BANNER_NAMES = 8


def _named(names: list[str], sep: str = ", ", rest: str = " and {} more (see the table)") -> str:
    """At most `BANNER_NAMES` names (or messages) for the banner (a zipped series may have hundreds; the table
    has them all), then `rest` with how many more."""
    more = len(names) - BANNER_NAMES
    return sep.join(names[:BANNER_NAMES]) + (rest.format(more) if more > 0 else "")


def _banner(results: list[tuple[str, dict]]) -> str:
    """The warnings a clinician must not miss, for the scan shown and for the batch."""
    shown = next(r for _, r in results if "error" not in r)
    lines = [f"### {w}" for w in shown["warnings"]]
    outside = [n for n, r in results if r.get("in_distribution") is False]
    unread = [n for n, r in results if "error" in r]
    burned = [n for n, r in results if r.get("scan", {}).get("burned_in_annotation")]
    if len(results) > 1 and outside:
        lines.append(f"{len(outside)} of {len(results)} scans are not like the training data: {_named(outside)}.")
    if len(results) > 1 and burned:
        lines.append(
            f"{len(burned)} of {len(results)} scans say text is burned into their pixels, which may identify the "
            f"patient: {_named(burned)}."
        )
    if unread:
        lines.append(f"{len(unread)} of {len(results)} files could not be read: {_named(unread)}.")
    return "\n\n".join(lines)


def make_diagnose(ctx: Studio):
    @user_error
    def diagnose(
        files,
        model: str = DEMO,
        method: str = "gradcam",
        target: str = PREDICTED,
        opacity: float = 0.5,
        progress=gr.Progress(track_tqdm=True),  # follows ScoreCAM's own batches too
    ):
        """Probabilities, trust, lesion map and box for each uploaded scan (API: /diagnose)."""
        predictor = ctx.predictor(model)
        wanted = None if target in (None, "", PREDICTED) else target
        paths = _files(files)
        # a ZIP archive's scans go to a private temp folder (readable by this user only), removed once answered;
        # not under ctx.images, whose sweep could remove it under a diagnosis longer than its keeping time
        with tempfile.TemporaryDirectory(prefix="tsskd-studio-unpack-") as unpacked:
            items = archive.expand(paths, Path(unpacked))
            progress(0, desc=f"Diagnosing {len(items)} scan(s)")
            # one batched pass for all of them, shared with other requests arriving at the same time
            found = archive.answer(
                items, lambda p: predictor.diagnose_files(p, method=method, target=wanted, opacity=opacity)
            )
        results = [(item.label, r) for item, r in zip(items, found, strict=True)]
        good = [(n, r) for n, r in results if "error" not in r]
        if not good:
            raise gr.Error(_named([r["error"] for _, r in results], sep="\n", rest="\nand {} more files"))
        first = good[0][1]
        greyed = untrusted(first) or first["low_confidence"]
        overlay_label = f"Lesion map for: {first['target']}, {percent(first['target_probability'])} ({good[0][0]})"
        stored = [kept(n, r) for n, r in good]
        overlays = [ctx.images.png(r["overlay"]) for _, r in good]  # each encoded once, shown in three places
        table = ctx.images.new_folder() / TABLE_FILE  # the table to keep, as core.predict --csv writes it
        table.write_text(answers.to_csv(results, predictor.classes), encoding="utf-8")
        return (
            _banner(results),
            first["probabilities"],
            overlays[0],
            (ctx.images.png(first["image"]), overlays[0]),
            [_row(n, r) for n, r in results],
            list(zip(overlays, [_caption(n, r) for n, r in good], strict=True)),
            [_detail(n, r) for n, r in results],
            stored,
            {"greyed": greyed, "overlay_label": overlay_label, "several": len(good) > 1, "table": str(table)},
        )

    return diagnose


def kept(name: str, answer: dict) -> dict:
    """What the studio keeps of an answer to redraw it at a new opacity: the scan as shown (at most 1024 px),
    its map, its lesion box in the scan's pixels with the scan's height and width, and its caption."""
    return {
        "image": answer["image"],
        "cam": answer["cam"],
        "box": answer["lesion_box"],
        "hw": scan_hw(answer),
        "caption": _caption(name, answer),
    }


def restyle(stored: list[dict] | None, opacity: float):
    """A new opacity redraws the stored maps; the model is not run again."""
    if not stored:
        return gr.skip(), gr.skip(), gr.skip()
    drawn = [redraw(s["image"], s["cam"], s["box"], opacity, s["hw"]) for s in stored]
    return drawn[0], (stored[0]["image"], drawn[0]), [(d, s["caption"]) for d, s in zip(drawn, stored, strict=True)]


def style(view: dict):
    """Grey the probabilities of an answer not to be trusted, name the class the map is for, show the
    maps of all scans only when there are several (one scan's would repeat the lesion map above it), and
    offer the table of this diagnosis as CSV."""
    if not view:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return (
        # an answer not to be read as it is loses the headline in large type that names its top class
        gr.update(elem_classes=[GREYED] if view["greyed"] else [], show_heading=not view["greyed"]),
        gr.update(label=view["overlay_label"]),
        gr.update(visible=view.get("several", True)),
        gr.update(value=view["table"], visible=True) if view.get("table") else gr.skip(),
    )


def _checked(layers: list[str] | None) -> str:
    """What the check looks at, in words: the model's features, and (checks fitted since 2026-12-05) the scan's
    own statistics, which flag noise and blank scans even when the model learned little."""
    return "the model's features and the scan's own statistics" if "input" in (layers or []) else "the model's features"


RESIZE_NAMES = {"lanczos": "Lanczos", "bilinear": "bilinear"}  # core.imageio.RESIZE_FILTERS, in words


def _kind(card: dict) -> str:
    """The kind of scan a model was trained on, and what is flagged for not being it."""
    kind = "greyscale (a colour image is flagged)" if card["channels"] == 1 else "colour"
    modalities = (card["ood"] or {}).get("modalities")
    if modalities:
        kind += f", DICOM {', '.join(modalities)} only (another modality is flagged)"
    return kind


def card_markdown(card: dict, choice: str) -> str:
    """The model card a clinician reads before trusting an answer."""
    m = card["metrics"]

    def pct(v):
        return "n/a" if v is None else f"{v:.1%}"

    lines = [
        "**Demo model**: trained on synthetic demo data, for trying the studio only."
        if choice in (None, "", DEMO)
        else f"**Run** {choice}",
        f"- data: {card['data'] or 'unknown'}, {card['image_size']} px (a scan of another size is resized to it "
        f"with {RESIZE_NAMES.get(card.get('resize'), card.get('resize'))}, as in training), {_kind(card)}; "
        f"classes: {', '.join(card['classes'])}",
        f"- method: {card['method']} ({card['arch']}), best epoch {card['best_epoch']} of {card['epochs']}",
        f"- test accuracy {pct(m.get('test_acc'))}, balanced {pct(m.get('test_balanced_accuracy'))}, "
        f"AUC {m.get('test_auc') or 0:.3f} (answering at random: balanced "
        f"{pct(card['chance']['balanced_accuracy'])}, AUC {card['chance']['auc']:.3f})",
    ]
    cal = card["calibration"]
    if cal:
        lines.append(
            f"- calibration: temperature {cal['temperature']:.2f}; test ECE {pct(cal['test_ece_before'])} "
            f"before, {pct(cal['test_ece_after'])} after"
        )
    else:
        lines.append("- calibration: none (probabilities are uncalibrated)")
    check = card["ood"]
    if check:
        lines.append(
            f"- out-of-distribution check: Mahalanobis on {_checked(check['layers'])}, threshold "
            f"{check['threshold']:.3g} from the validation split; flags {pct(check['flagged_test'])} of its own "
            "test scans"
        )
    else:
        lines.append(
            "- out-of-distribution check: **none** (a model saved before the check existed); add one with "
            "`python -m core.ood --model RUN`"
        )
    if not card["learned"]:  # first, where it cannot be missed
        reasons = "; ".join(f"{w.get('message')} (epoch {w.get('epoch')})" for w in card["warnings"])
        lines.insert(0, f"**This model did not learn its task: do not trust any of its answers.** {reasons}.")
    return "\n".join(lines)


def scorecam_note(ctx: Studio, choice: str, method: str, files: list[str] | None = None) -> str:
    """What ScoreCAM costs with the chosen model on this machine, a scan and for the scans chosen (a ZIP's scans
    are counted only once unpacked: with one in the upload, the cost a scan alone)."""
    if method != "scorecam":
        return ""
    try:
        seconds = ctx.predictor(choice).cam_seconds("scorecam")
    except (StudioError, OSError):  # an unreadable or removed model says so on its card and when used
        return ""
    each = "under a second" if seconds < 1 else f"about {duration(seconds)}"
    note = f"ScoreCAM runs the model once per feature map: {each} per scan on this machine"
    paths = [Path(f) for f in files or []]
    if len(paths) > 1 and not any(archive.is_archive(p) for p in paths):
        note += f"; these {len(paths)} scans about {duration(len(paths) * seconds)}"
    return note + "."


def build(ctx: Studio) -> None:
    with gr.Tab("Diagnose", id="diagnose"):
        gr.Markdown(
            "Upload scans (PNG, JPEG, TIFF, BMP or DICOM, with or without extension, or a ZIP archive of them "
            "such as a study exported from a PACS) to get class probabilities, whether to trust them, and a "
            "lesion map. Patient details in DICOM files are never shown or kept.\n\n" + RESEARCH_USE
        )
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Scans", file_count="multiple", type="filepath", elem_id="diagnose-files")
                model = gr.Dropdown(
                    ctx.model_choices(),
                    value=DEMO,
                    label="Model",
                    info="the demo model, finished runs"
                    + (f", and model files put in {ctx.models_dir.name}/" if ctx.models_dir else ""),
                    allow_custom_value=True,
                    elem_id="diagnose-model",
                )
                card = gr.Markdown(elem_id="diagnose-card")
                method = gr.Dropdown(
                    list(CAM_METHODS), value="gradcam", label="Lesion-map method", elem_id="diagnose-method"
                )
                cost = gr.Markdown(elem_id="diagnose-cost")
                target = gr.Dropdown(
                    [PREDICTED], value=PREDICTED, label="Map the evidence for", allow_custom_value=True
                )
                opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Map opacity", elem_id="diagnose-opacity")
                run = gr.Button("Diagnose", variant="primary", elem_id="diagnose-run")
                # Buttons, not gr.Examples: those hand the browser copies made in the cache at start-up, which
                # the cache's five-minute clean-up removes (a demo scan clicked later could not be read); a
                # click here has the server copy the scan afresh.
                gr.Markdown("Demo scans (from the demo model's own test split; not real patients)")
                with gr.Row(elem_id="diagnose-examples"):
                    for label, paths in demo_scans():
                        gr.Button(label, size="sm", min_width=60).click(
                            lambda paths=paths: paths, None, files, api_name=False, show_progress="hidden"
                        )
            with gr.Column(scale=2):
                warning = gr.Markdown(elem_id="diagnose-warning", elem_classes=["studio-alert"])
                probs = gr.Label(
                    label="Class probabilities (first scan; calibrated when the model is)",
                    num_top_classes=10,
                    elem_id="diagnose-probs",
                )
                with gr.Row():
                    overlay = gr.Image(
                        label="Lesion map",
                        type="numpy",
                        format="png",
                        interactive=False,
                        height=320,  # without it the row shrinks the map to a thumbnail
                        elem_id="diagnose-overlay",
                    )
                    slider = gr.ImageSlider(
                        label="Before / after",
                        type="numpy",
                        format="png",
                        interactive=False,
                        height=320,  # as tall as the map beside it
                        elem_id="diagnose-slider",
                    )
        # the whole tab's width: the table is the answer to an upload of many scans, every column in view
        table = gr.Dataframe(
            headers=TABLE_HEADERS,
            column_widths=tables.widths(TABLE_HEADERS, TABLE),
            label="All scans",
            interactive=False,
            wrap=True,
            elem_id="diagnose-table",
        )
        download = gr.DownloadButton(
            "Download the table (CSV: every class's probability, the flags and warnings)",
            size="sm",
            visible=False,  # until a diagnosis
            elem_id="diagnose-download",
        )
        gallery = gr.Gallery(
            label="Lesion maps",
            columns=4,
            format="png",
            height=320,
            object_fit="contain",
            elem_id="diagnose-gallery",
            visible=False,  # until a diagnosis of several scans (style)
        )
        with gr.Accordion("Details (JSON, as /diagnose returns them)", open=False):
            details = gr.JSON(label="Details")
        stored = gr.State([])  # the maps drawn, so a new opacity needs no model
        view = gr.State({})  # how the first scan's answer is shown: greyed or not, the map's caption

        def describe(choice):
            try:
                predictor = ctx.predictor(choice)
            except Exception as e:  # an unreadable model shows its error here and when used
                return gr.update(choices=[PREDICTED], value=PREDICTED), f"**Cannot load this model**: {e}"
            text = card_markdown(predictor.card(), choice)
            return gr.update(choices=[PREDICTED, *predictor.classes], value=PREDICTED), text

        def on_load(request: gr.Request):
            """The model named in the page's address (?model=...), so a reload does not fall back to the demo
            model unasked; the demo model otherwise (or when that one is gone)."""
            choice = from_address(request, "model", [v for _, v in ctx.model_choices()]) or DEMO
            return choice, *describe(choice)

        follow_models(ctx, [model])
        keep_on_reload(ctx.kept, "diagnose", [method, opacity])  # the scans are never kept

        def on_model(choice, method, files):
            """A model's classes and card, and what ScoreCAM costs with it (one listener: see ui.kept)."""
            return *describe(choice), scorecam_note(ctx, choice, method, files)

        model.change(on_model, [model, method, files], [target, card, cost], api_name=False, show_progress="hidden")
        model.change(None, model, None, js=address_js("model"), api_name=False)  # a reload comes back to it
        gr.on(None, on_load, None, [model, target, card], api_name=False, show_progress="hidden")
        gr.on(  # other scans change the cost, as the method and the model do
            [method.change, files.change],
            lambda c, m, f: scorecam_note(ctx, c, m, f),
            [model, method, files],
            cost,
            api_name=False,
            show_progress="hidden",
        )
        opacity.release(restyle, [stored, opacity], [overlay, slider, gallery], api_name=False)
        run.click(
            make_diagnose(ctx),
            [files, model, method, target, opacity],
            [warning, probs, overlay, slider, table, gallery, details, stored, view],
            api_name="diagnose",
            api_description=DESCRIPTION,
            concurrency_limit=16,  # concurrent requests join one batched pass (core.serving)
        ).then(style, view, [probs, overlay, gallery, download], api_name=False, show_progress="hidden")
