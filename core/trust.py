"""How far to trust an answer: the warnings a reader must see beside it, and which answers get no lesion box.

`core.infer` attaches them to every answer; the studio and `core.predict` show them as they are.
"""

from __future__ import annotations

from pathlib import Path

from core.model import resolve_model_path
from core.runs import MODEL, Run, read_json

LOW_CONFIDENCE = 0.6  # a prediction below this probability is flagged for a second look
OOD_MESSAGE = "Not like the training data: do not trust this prediction"
COLOUR_MESSAGE = "A colour image, and this model was trained on greyscale scans: it sees the grey level only"
MODALITY_MESSAGE = "A DICOM {modality} scan, and this model was trained on {trained} scans only"
LOW_CONFIDENCE_MESSAGE = "Low confidence: a second look is needed"
BURNED_IN_MESSAGE = (
    "This DICOM file says text is burned into its pixels, which may identify the patient: the scan and its "
    "lesion map show it, so share them only as you would the scan"
)
UNLEARNED = ("collapse", "chance")  # the training warnings of a model whose answers carry no information
UNLEARNED_MESSAGE = "This model did not learn its task: do not trust any of its answers"
UNFINISHED_MESSAGE = "Training has not finished: answers are uncalibrated and unchecked; do not trust them"
# Classes that mean "no lesion": a map for one of them shows what the model took as normal, and no lesion box
# is drawn on it (a box around "normal" evidence would point a reader at a lesion that is not there).
NO_FINDING = ("normal", "healthy", "no finding", "no lesion", "no abnormality", "negative")


def untrusted(answer: dict) -> bool:
    """Whether an answer (`Predictor._summary`'s) is not to be trusted at all: its scan is unlike the training
    data, or its model did not learn. Its map gets no lesion box (a box would point a reader at a lesion)."""
    return answer["in_distribution"] is False or not answer["model_learned"]


def is_no_finding(name: str) -> bool:
    """Whether a class name means "no lesion" (NO_FINDING), ignoring case, '_' and '-'."""
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split()) in NO_FINDING


def unfinished_run(model_path: str | Path, meta: dict | None = None) -> str | None:
    """For the model of a run that has not ended done (still training, stopped, failed): why it is not ready
    for scans (`Run.unfinished`), read from its run folder, or for a model file exported from such a run from
    its JSON (`meta`, the file's own when not given), where the export wrote it. None for a finished run's
    model, one exported from it, the demo."""
    weights = resolve_model_path(model_path)
    run = Run(weights.parent)
    if weights.name == MODEL and run.exists():
        return run.unfinished()
    if meta is None:
        meta = read_json(weights.with_suffix(".json"), {})
    reason = meta.get("unfinished") if isinstance(meta, dict) else None
    return reason if isinstance(reason, str) and reason else None


def training_warnings(model_path: str | Path, meta: dict) -> list[dict]:
    """What its training found wrong with a model: model.json's `warnings` (they travel with an exported
    model), and for a run folder its status.json's (a run finished before model.json carried them)."""
    found = [w for w in meta.get("warnings") or [] if isinstance(w, dict)]
    if Path(model_path).is_dir():
        found += [w for w in Run(model_path).status().get("warnings") or [] if isinstance(w, dict)]
    kinds: dict[str, dict] = {}
    for w in found:
        kinds.setdefault(str(w.get("kind")), w)
    return list(kinds.values())
