"""Objects shared by the tabs, made once by app.py and passed to every `build(ctx)`."""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from core import listing, runs
from core.errors import StudioError
from core.infer import Predictor
from core.jobs import JobManager
from core.model import DEMO, DEMO_MODEL, model_file, model_files, resolve_model_path
from core.trust import UNLEARNED, unfinished_run
from ui.files import ImageFiles
from ui.kept import KeptForms

ASSETS = Path(__file__).resolve().parents[1] / "assets"
EXAMPLES = sorted((ASSETS / "examples").glob("*.png"))  # demo scans from the demo model's test split
DEMO_LABEL = "Demo model (TSS-KD + RGA, demo data)"
log = logging.getLogger("ui")
# Gradio's cache of uploads and served images: every CACHE_SWEEP_S seconds the files older than UPLOAD_KEEP_S
# are removed, so that no patient's scan stays on disk (docs/safety.md)
CACHE_SWEEP_S, UPLOAD_KEEP_S = 60, 300


def uploaded(files) -> list[str]:
    """The paths of the files a component holds (one or a list; [] for none). A file the cache's clean-up has
    removed since it was uploaded is refused with what to do, instead of failing as a file not found."""
    items = files if isinstance(files, list) else [files] if files else []
    paths = [f if isinstance(f, str) else f.name for f in items]
    gone = [Path(p).name for p in paths if not Path(p).exists()]
    if gone:
        raise StudioError(
            f"{', '.join(gone)}: the studio keeps uploads for {UPLOAD_KEEP_S // 60} minutes only and has removed "
            f"{'it' if len(gone) == 1 else 'them'} (nothing of a patient stays on disk); upload again."
        )
    return paths


class ModelCache:
    """Loaded predictors by file, the most recent few kept; loading is the slow part of a diagnosis. A model
    file replaced on disk (a new version under the same name in the models folder, a check refitted with
    `core.ood`) is loaded again: the key holds the times its weights and JSON were written. Models run on
    `device` (app.py --diagnose-device; the CPU by default)."""

    def __init__(self, size: int = 4, device: str = "cpu"):
        self._items: OrderedDict[tuple, Predictor] = OrderedDict()
        self._lock = threading.Lock()
        self.size = size
        self.device = device

    @staticmethod
    def _key(path: Path) -> tuple:
        weights = resolve_model_path(path).resolve()
        return (weights, weights.stat().st_mtime_ns, weights.with_suffix(".json").stat().st_mtime_ns)

    def get(self, path: Path) -> Predictor:
        key = self._key(path)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        predictor = Predictor(path, device=self.device)
        with self._lock:  # two first requests may both load it: one instance is kept, so they batch together
            predictor = self._items.setdefault(key, predictor)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return predictor


@dataclass
class Studio:
    data_root: Path
    runs_dir: Path
    jobs: JobManager
    auth: bool = False  # when on, starting, stopping and deleting runs need a logged-in user
    models_dir: Path | None = None  # model files Diagnose offers beside the runs (app.py --models-dir)
    models: ModelCache = field(default_factory=ModelCache)
    images: ImageFiles = field(default_factory=ImageFiles)  # what handlers return, encoded once each
    kept: KeptForms = field(default_factory=KeptForms)  # each tab's settings, given back after a reload

    def require_user(self, request: gr.Request | None) -> None:
        """Checked inside the handlers that change runs, not only at the login page."""
        if self.auth and not getattr(request, "username", None):
            raise StudioError("log in to start, stop or delete runs.")

    def model_choices(self) -> list[tuple[str, str]]:
        """(label, value) for the demo model and every finished run with a model (a run still training, or
        stopped, has a model too, but not yet calibrated or checked: `model_path` refuses it)."""
        out = [(DEMO_LABEL, DEMO)] if DEMO_MODEL.is_file() else []
        for r in listing.list_runs(self.runs_dir):
            if r["status"] == "done" and runs.Run(self.runs_dir / r["run"]).has_model():
                about = [str(r["method"] or "method unknown")]
                if r["best_val_auc"]:
                    about.append(f"val AUC {r['best_val_auc']:.3f}")
                if any(kind in r["warnings"] for kind in UNLEARNED):  # said before it is picked
                    about.append("DID NOT LEARN")
                out.append((f"{r['run']} ({', '.join(about)})", r["run"]))
        for path in model_files(self.models_dir) if self.models_dir else []:
            if not unfinished_run(path, file_meta(path) or {}):  # exported before its run ended: refused below
                out.append((f"{path.stem} ({file_about(path)})", path.name))
        return out

    def model_path(self, choice: str) -> Path:
        if choice in (None, "", DEMO):
            return resolve_model_path(DEMO)  # one message for a demo model gone missing, as on the command line
        if choice.endswith(".safetensors"):  # a model file's name (a run's id never ends so)
            if not self.models_dir:
                raise StudioError(f"{choice}: this studio has no models folder (app.py --models-dir).")
            path = model_file(self.models_dir, choice)
            reason = unfinished_run(path, file_meta(path) or {})
            if reason:
                raise StudioError(
                    f"{choice} was exported before its run finished: {reason}. Diagnose takes finished models."
                )
            return path
        path = self.jobs.find(choice)
        reason = runs.Run(path).unfinished()
        if reason:
            raise StudioError(f"{reason}. Diagnose takes finished runs: resume this one, or pick another model.")
        return path

    def predictor(self, choice: str) -> Predictor:
        return self.models.get(self.model_path(choice))


def file_meta(path: Path) -> dict | None:
    """A model file's JSON, or None when it cannot be read. The pickers ask every few seconds, so a JSON is
    read again only once it has been written again."""
    meta = path.with_suffix(".json")
    try:
        written = meta.stat().st_mtime_ns
    except OSError:
        written = None
    return _read_meta(meta, written)


@functools.lru_cache(maxsize=256)
def _read_meta(path: Path, written: int | None) -> dict | None:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def file_about(path: Path) -> str:
    """What a model file's picker label says of it, from its JSON: its method, validation AUC, and whether it
    did not learn (said before it is picked), or why its JSON cannot be read."""
    meta = file_meta(path)
    if meta is None:
        return "model file; its JSON description cannot be read"
    about = [f"model file, {meta.get('method') or 'method unknown'}"]
    metrics = meta.get("metrics")
    auc = metrics.get("val_auc") if isinstance(metrics, dict) else None
    if isinstance(auc, (int, float)):
        about.append(f"val AUC {auc:.3f}")
    if any(isinstance(w, dict) and w.get("kind") in UNLEARNED for w in meta.get("warnings") or []):
        about.append("DID NOT LEARN")
    return ", ".join(about)


def repick(choices: list, value, *, gone=None) -> dict:
    """A picker's new choices from a poll. Its value is left to the page while it is still a choice (or
    none is picked): the poll read `value` when its tick began, and a Start (or a user's pick) may have
    set another since, which sending the old one back would undo. A value no longer among the choices
    (a deleted run) becomes `gone`. Multiselect values are lists: the choices that remain are kept."""
    ids = [c[1] if isinstance(c, tuple) else c for c in choices]  # (label, value) or plain values
    if isinstance(value, list):
        kept = [v for v in value if v in ids]
        return gr.update(choices=choices) if kept == value else gr.update(choices=choices, value=kept)
    if value is None or value in ids:
        return gr.update(choices=choices)
    return gr.update(choices=choices, value=gone)


def address_js(param: str) -> str:
    """Browser code that keeps a picker's value in the page's address (``?param=value``; a multiselect's values
    joined by commas, which no run id or file name here holds), so that a reload, or the address opened again,
    comes back to it (`from_address` reads it on load)."""
    return f"""(value) => {{
    const url = new URL(window.location);
    const kept = Array.isArray(value) ? value.join(",") : value;
    if (kept) {{ url.searchParams.set("{param}", kept); }} else {{ url.searchParams.delete("{param}"); }}
    window.history.replaceState(null, "", url);
}}"""


def from_address(request: gr.Request | None, param: str, choices: list) -> str | None:
    """The value `address_js(param)` kept in the page's address when it is still one of `choices`, else None."""
    wanted = (request.query_params.get(param) if request else None) or None
    return wanted if wanted in choices else None


def all_from_address(request: gr.Request | None, param: str, choices: list) -> list:
    """A multiselect's values `address_js(param)` kept in the page's address that are still among `choices`."""
    kept = (request.query_params.get(param) if request else None) or ""
    return [v for v in kept.split(",") if v in choices]


def poll(seconds: float, fn, inputs: list, outputs: list) -> None:
    """Run `fn` every `seconds` while the page is open, quietly (no API name, no spinner); `fn` returns
    gr.skip() for what did not change, so an idle page costs little."""
    gr.Timer(seconds).tick(fn, inputs, outputs, api_name=False, show_progress="hidden")


def models_update(ctx: Studio, last: list | None, values: list) -> tuple:
    """One poll of the model pickers showing `values`: new choices when the runs folder's models changed
    since `last` (a picked model that was deleted falls back to the demo model), else nothing."""
    choices = ctx.model_choices()
    if choices == last:
        return (*[gr.skip() for _ in values], gr.skip())
    return (*[repick(choices, v, gone=DEMO) for v in values], choices)


def follow_models(ctx: Studio, pickers: list, *, every: float = 5.0) -> None:
    """Keep model pickers in step with the runs folder, with no restart and no Refresh button: on page load
    and every `every` seconds, sending nothing when the list is unchanged (`models_update`)."""
    seen = gr.State(None)

    def load():
        choices = ctx.model_choices()
        return (*[gr.update(choices=choices) for _ in pickers], choices)

    gr.on(None, load, None, [*pickers, seen], api_name=False, show_progress="hidden")
    poll(every, lambda last, *values: models_update(ctx, last, list(values)), [seen, *pickers], [*pickers, seen])


def user_error(fn):
    """Show a user's mistake (StudioError, or a gr.Error the handler raised) as a message in the page, and log
    it on the server as one line, not a traceback; tracebacks stay for real faults."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (StudioError, gr.Error) as e:
            message = e.message if isinstance(e, gr.Error) else str(e)
            log.info("%s: %s", fn.__name__, message.replace("\n", " | "))
            raise gr.Error(message, print_exception=False) from None

    return wrapper
