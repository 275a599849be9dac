"""The classifier: a torchvision backbone whose head gives 128 features, then a small projector to the classes.

The default is the paper's ResNet-18: for inputs of 64 px or less its stem is a 3x3 stride-1 convolution
with no max-pool. The projector is ``Linear(128, 128) - BN - ReLU - Linear(128, C)``. Checkpoints are a
``.safetensors`` file of weights plus a JSON file that says how to rebuild the network; never pickles.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from core.augment import IMAGENET_MEAN, IMAGENET_STD
from core.errors import StudioError
from core.imageio import RESIZE, RESIZE_BEFORE, RESIZE_FILTERS
from core.runs import Run

FORMAT = "tss-kd-studio/model-1"
ARCHS = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "efficientnet_b0", "densenet121")
SMALL_INPUT = 64  # at or below this size ResNets get the 3x3 stride-1 stem and no max-pool
# The shipped demo model, and the name the studio, its API and every `--model` option know it by
DEMO = "demo"
DEMO_MODEL = Path(__file__).resolve().parents[1] / "assets" / "demo-model.safetensors"


@dataclass
class ModelSpec:
    """Everything needed to rebuild a network and feed it; written to model.json."""

    arch: str = "resnet18"
    classes: list[str] = field(default_factory=list)
    image_size: int = 32
    channels: int = 1  # channels of the data; the network always sees 3
    feature_dim: int = 128
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: str = RESIZE  # how a scan of another size is resized to image_size: as the training data were

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def small_input(self) -> bool:
        return self.image_size <= SMALL_INPUT


class Classifier(nn.Module):
    """backbone -> 128 features -> projector -> logits. `forward` returns logits (B, C)."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        # No biases, as in the paper's public code (the first is redundant before BN).
        self.projector = nn.Sequential(
            nn.Linear(feature_dim, feature_dim, bias=False),
            nn.BatchNorm1d(feature_dim),
            nn.ReLU(inplace=True),
            nn.Linear(feature_dim, num_classes, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, C)
        return self.projector(self.backbone(x))


def _backbone(spec: ModelSpec) -> nn.Module:
    if spec.arch not in ARCHS:
        raise StudioError(f"unknown architecture '{spec.arch}'; choose one of {', '.join(ARCHS)}.")
    net = torchvision.models.get_model(spec.arch, weights=None, num_classes=spec.feature_dim)
    if spec.arch.startswith("resnet") and spec.small_input:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    return net


def build_model(spec: ModelSpec, *, pretrained: str | None = None) -> Classifier:
    """A freshly initialised classifier for `spec`, optionally starting from saved weights (see `load_pretrained`)."""
    if spec.num_classes < 2:
        raise StudioError("a classifier needs at least two classes.")
    model = Classifier(_backbone(spec), spec.feature_dim, spec.num_classes)
    if pretrained:
        load_pretrained(model, pretrained)
    return model


def check_pretrained(path: str, arch: str, image_size: int) -> None:
    """Refuse now what starting a run of `arch` at `image_size` from the weights at `path` would refuse: no
    such file, a file not read safely as weights, weights none of which fit (the class count changes only
    the last layer, which is never taken)."""
    build_model(ModelSpec(arch=arch, classes=["a", "b"], image_size=image_size), pretrained=path)


def _read_weights(p: Path) -> dict:
    try:
        if p.suffix == ".safetensors":
            return load_file(p)
        state = torch.load(p, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, OSError, ValueError, EOFError) as e:
        raise StudioError(f"{p.name}: not a weight file this studio can load safely ({e}).") from None
    if not isinstance(state, dict):
        raise StudioError(f"{p.name}: expected a state dict of tensors.")
    return state


def load_pretrained(model: Classifier, path: str) -> list[str]:
    """Start from saved weights: a local torchvision file for the backbone (.pth/.pt read with
    weights_only, or .safetensors), or one of our runs / model files (backbone and projector).

    Layers whose shape differs (a classifier head, a small-input stem, another class count) keep their
    fresh weights; returns their names.
    """
    p = Path(path)
    ours = p.is_dir() or (p.suffix in (".safetensors", ".json") and p.with_suffix(".json").is_file())
    if ours:
        state = _read_weights(resolve_model_path(p))
    elif p.is_file():
        state = {f"backbone.{k}": v for k, v in _read_weights(p).items()}
    else:
        raise StudioError(f"{p.name}: no such pretrained weight file.")
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and isinstance(v, torch.Tensor) and v.shape == own[k].shape}
    if not usable:
        raise StudioError(f"{p.name}: none of its weights fit this architecture.")
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))


def cam_layer(model: Classifier) -> nn.Module:
    """The last convolutional block: where Grad-CAM reads activations and gradients."""
    bb = model.backbone
    if hasattr(bb, "layer4"):
        return bb.layer4[-1]
    return bb.features[-1] if not hasattr(bb.features, "norm5") else bb.features.denseblock4


def mid_layer(model: Classifier) -> nn.Module:
    """A mid-depth backbone block (ResNets: layer3; others: two thirds into `features`), where the
    out-of-distribution check reads texture and intensity statistics."""
    bb = model.backbone
    if hasattr(bb, "layer3"):
        return bb.layer3
    return bb.features[len(bb.features) * 2 // 3]


def early_layer(model: Classifier) -> nn.Module:
    """An early backbone block (ResNets: layer2; others: a third into `features`), where the
    out-of-distribution check reads fine texture: the noise that resizing to the model's input softens."""
    bb = model.backbone
    if hasattr(bb, "layer2"):
        return bb.layer2
    return bb.features[len(bb.features) // 3]


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file and rename it: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` as a safetensors file, atomically, with the mode every other file the studio writes
    gets from the umask: safetensors' own writer makes its files 0600, so a run held JSON readable by the
    group beside weights that were not."""
    data = save(tensors, metadata=metadata)
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def save_model(model: nn.Module, spec: ModelSpec, path: Path, *, extra: dict | None = None, half: bool = False) -> None:
    """Write `path` (.safetensors) and its JSON twin (`model.safetensors` -> `model.json`), atomically.

    `half` stores floating-point weights as float16 (half the size; loading converts them back)."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    write_safetensors(path, state)
    meta = {"format": FORMAT, **asdict(spec), "num_classes": spec.num_classes, "in_channels": 3, **(extra or {})}
    meta["normalisation"] = {"mean": list(spec.mean), "std": list(spec.std)}
    text = json.dumps(meta, indent=2)
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(text))


def model_files(folder: str | Path) -> list[Path]:
    """The model files in `folder` itself, by name: each `.safetensors` but an out-of-distribution check's
    tensors (`<model>.ood.safetensors`) and hidden files. [] when there is no such folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.glob("*.safetensors")
        if not p.name.endswith(".ood.safetensors") and not p.name.startswith(".")
    )


def model_file(folder: str | Path, name: str) -> Path:
    """The model file of `folder` named `name` exactly as `model_files` lists it; a path, or a name it does not
    list, is refused."""
    found = {p.name: p for p in model_files(folder)}
    if name not in found:
        raise StudioError(f"{name}: no such model file in the models folder ({Path(folder).name}/).")
    return found[name]


def resolve_model_path(path: str | Path) -> Path:
    """`DEMO` (the word alone, as the studio names the shipped demo model; ``./demo`` is a path), a run
    directory, a `.safetensors` file or its `.json` twin -> the `.safetensors` weights path."""
    if path == DEMO:  # a Path never equals a str
        if not DEMO_MODEL.is_file():
            raise StudioError(
                "the demo model is missing from assets/ (a fresh clone has it; make demo-model trains it)."
            )
        return DEMO_MODEL
    p = Path(path)
    if p.is_dir():
        p = Run(p).model_path
    elif p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if p.suffix in (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"):
        raise StudioError(f"{p.name}: pickled checkpoints are refused; models load only from .safetensors + .json.")
    if p.suffix != ".safetensors":
        raise StudioError(f"{p.name}: not a model; give a run folder or a .safetensors file.")
    if not p.is_file():
        raise StudioError(f"{p.name}: no such model file ({p.parent.name}/ has no finished model yet?).")
    if not p.with_suffix(".json").is_file():
        raise StudioError(f"{p.name}: its description {p.with_suffix('.json').name} is missing.")
    return p


def refittable_model_path(path: str | Path) -> Path:
    """`resolve_model_path` for a command that refits part of a model and rewrites its JSON (calibration, the
    out-of-distribution check). The shipped demo model comes fitted, so its name is refused: a refit on this
    machine changes its figures in the last digits and leaves assets/ modified in git. Its file path is taken,
    for whoever means to refit it."""
    if path == DEMO:
        raise StudioError(
            "the demo model comes with its calibration and out-of-distribution check fitted; it is not refitted "
            f"by name. To refit it anyway, give its file: --model assets/{DEMO_MODEL.name}"
        )
    return resolve_model_path(path)


def saved_resize(meta: dict) -> str:
    """How a saved model's inputs are resized (`core.imageio.RESIZE_FILTERS`): as its JSON says. One saved
    before the JSON said was trained on bilinear-resized images, unless its data were the demo's: those are
    rendered at the model's size, never resized, so its scans take the default filter."""
    if "resize" in meta:
        return str(meta["resize"])
    data = (meta.get("config") or {}).get("data") or {}
    return RESIZE if data.get("dataset") == "synthetic" else RESIZE_BEFORE


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[Classifier, ModelSpec, dict]:
    """Rebuild a saved model in eval mode, channels-last. Returns (model, spec, the whole model.json)."""
    weights = resolve_model_path(path)
    try:
        meta = json.loads(weights.with_suffix(".json").read_text())
        spec = ModelSpec(
            arch=meta["arch"],
            classes=[str(c) for c in meta["classes"]],
            image_size=int(meta["image_size"]),
            channels=int(meta["channels"]),
            feature_dim=int(meta.get("feature_dim", 128)),
            mean=tuple(meta.get("mean", IMAGENET_MEAN)),
            std=tuple(meta.get("std", IMAGENET_STD)),
            resize=saved_resize(meta),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise StudioError(f"{weights.with_suffix('.json').name}: not a valid model description ({e}).") from None
    if spec.channels not in (1, 3):
        raise StudioError(f"{weights.name}: channels must be 1 or 3.")
    if spec.resize not in RESIZE_FILTERS:
        raise StudioError(f"{weights.name}: unknown resize filter '{spec.resize}' in its JSON.")
    model = build_model(spec)
    try:
        state = load_file(weights)
        model.load_state_dict(state, strict=True)
    except (SafetensorError, OSError) as e:
        raise StudioError(f"{weights.name}: the weights file is damaged ({e}).") from None
    except RuntimeError as e:
        raise StudioError(f"{weights.name}: the weights do not match the architecture in its JSON ({e}).") from None
    # channels-last, as in training: oneDNN's and cuDNN's faster convolutions (1.18x on a 2-core AVX2 CPU)
    return model.to(device, memory_format=torch.channels_last).eval(), spec, meta
