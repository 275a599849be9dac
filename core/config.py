"""Every setting of a run, in one place: `DataConfig` and `TrainConfig` with their defaults, help texts,
choices and checks, the recipes (`PRESETS`: the published one and a quick one), and what is derived from
them. A new setting is one field here; the command line, the studio's API and form (core.settings) and
saved runs follow.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, replace

from core.device import AMP_CHOICES, host_memory_bytes
from core.errors import StudioError
from core.imageio import RESIZE, RESIZE_BEFORE, RESIZE_FILTERS
from core.losses import KD_SCALINGS, kd_warmup_factor
from core.methods import METHODS, get_method
from core.model import ARCHS
from core.runs import RUNS_DIR

DATASETS = ("synthetic", "medmnist", "folder")
OPTIMIZERS = ("sgd", "adam")


# Recipes, applied by `--preset NAME` and the API's "preset" (explicit flags and settings still win): the
# published one (also the Train tab's recipe switch) and the quick one the Train tab offers for a long run.
PRESETS: dict[str, dict] = {
    # Liu et al. 2025 as published and in the public code: TSS-KD 4 / 0.4 with the KL scaled by
    # t_target**2, weight 1, no warm-up, 100 epochs of SGD 0.01 at batch 128. From scratch it collapses
    # to a constant output (measured; README, "Results"); the studio's defaults are the stable variant.
    "paper": {
        "method": "tss-kd",
        "t_target": 4.0,
        "t_nontarget": 0.4,
        "kd_weight": 1.0,
        "kd_scaling": "paper",
        "kd_warmup": 0,
        "rga": True,
        "optimizer": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "epochs": 100,
        "batch_size": 128,
        "poly_power": 0.9,
    },
    # Short runs to try things on a CPU in minutes (the Train tab offers it when a run would be long): the
    # studio's recipe, 5 epochs at 32 px (of 1,000 images when the data are the demo's), with Adam at 0.001:
    # the long runs' SGD at 0.01 learns the demo task only partly in 160 steps (8 seeds: 0.743 +- 0.032 test
    # accuracy against 0.624 +- 0.028; as the Train tab runs it, 0.726 +- 0.021 against 0.625 +- 0.085; 2-core
    # AMD Zen 4, bench/results/methods-quick-*). No KD warm-up: the default's share of the run (10 of 100
    # epochs) is under one epoch. With the studio's scaling the term's curvature is that of classic KD
    # whatever the temperatures, and on an H100 TSS-KD without warm-up matched it with (0.889 vs 0.893 test
    # accuracy, bench/results/methods-gpu-synthetic.md); the Temperatures tab's sweeps run without it too.
    # Batches of 32, not 128: 160 steps instead of 40 (with SGD, test accuracy 0.64 / 0.56 / 0.62 for seeds
    # 0-2 against 0.53 / 0.47 / 0.42 at 128, for 10% more time; 2-core Xeon with AMX, 2026-12-05).
    "quick": {
        "epochs": 5,
        "synthetic_train": 1000,
        "image_size": 32,
        "kd_warmup": 0,
        "batch_size": 32,
        "optimizer": "adam",
        "lr": 0.001,
    },
}
QUICK = PRESETS["quick"]
QUICK_TEXT = (
    f"{QUICK['epochs']} epochs of {QUICK['synthetic_train']:,} demo images at {QUICK['image_size']} px in "
    f"batches of {QUICK['batch_size']} with {QUICK['optimizer'].capitalize()} at {QUICK['lr']:g}, without KD warm-up"
)

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1024
MIN_TEMPERATURE = 1e-3  # below it logits / T leave float32's range (1e-320 gave NaN losses)
MAX_LR = 10.0  # far above any recipe's; larger values only diverge (1e308 does not fit in float32)
DEMO_MEMORY_SHARE = 0.5  # the demo data may take at most this share of the machine's memory


def setting(default, help: str, **cli):  # noqa: A002 - the argparse word
    """A config field with its command-line help; `cli` may add choices, metavar or cli=False."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is split; stored in every run's config."""

    dataset: str = setting("synthetic", "where the images come from", choices=DATASETS)
    data_path: str | None = setting(None, "MedMNIST .npz, image folder, or CSV manifest (not for synthetic)")
    image_size: int = setting(32, "images are resized to this square size")
    resize: str = setting(
        RESIZE,
        "how images of another size are resized (lanczos: sharp; bilinear: as before)",
        choices=tuple(RESIZE_FILTERS),
    )  # recorded with the model, so that Diagnose resizes a scan as training did; runs made before read as bilinear
    synthetic_train: int = setting(5000, "demo data: training images")
    synthetic_val: int | None = setting(None, "demo data: validation images (default: a fifth of the training images)")
    synthetic_test: int | None = setting(None, "demo data: test images (default: a fifth of the training images)")
    synthetic_contrast: float = setting(1.0, "demo lesion contrast")
    val_fraction: float = setting(0.15, "folders: validation share drawn from train")
    test_fraction: float = setting(0.15, "folders: test share drawn from train")
    skip_bad_files: bool = setting(False, "leave unreadable files out (named in the log)")
    seed: int = setting(0, "seed of the split and the demo data (the CLI's --seed sets it)", cli=False)

    def resolved(self) -> DataConfig:
        """The demo data's validation and test sizes filled in: a fifth of the training images each, at
        least 64 (1,000 for the default 5,000), wherever a run is started from."""
        share = max(64, self.synthetic_train // 5)
        return replace(
            self,
            synthetic_val=share if self.synthetic_val is None else self.synthetic_val,
            synthetic_test=share if self.synthetic_test is None else self.synthetic_test,
        )


def whole_number(value, what: str, *, low: int = -(2**63)) -> int:
    """A seed (or the like) from the command line, the API or a form, as torch's generators take it: a
    whole number from `low` to 2**63 - 1. An emptied form field arrives as None and is refused too."""
    high = 2**63 - 1
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not low <= value <= high
        or value != int(value)
    ):
        raise StudioError(f"the {what} must be a whole number from {low:,} to {high:,}.")
    return int(value)


# what each source's --data-path names (the demo data has none)
DATA_PATHS = {"medmnist": "a MedMNIST .npz file", "folder": "an image folder or a CSV manifest"}


def data_path_given(data: DataConfig) -> tuple[bool, str]:
    """Data other than the demo data needs its path: checked with the other settings, before a run folder
    is made (an empty path once reached the trainer, which made a failed run of it)."""
    ok = data.dataset not in DATA_PATHS or bool((data.data_path or "").strip())
    return ok, (
        f"the {data.dataset} data needs its path, {DATA_PATHS.get(data.dataset)} "
        "(--data-path; in the studio, the path inside the data folder)."
    )


def image_size_ok(size: int) -> tuple[bool, str]:
    """(whether `size` is an image size the studio trains at, the message if not)."""
    return MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE, (
        f"image size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} pixels, not {size}."
    )


def demo_data_fits(data: DataConfig) -> tuple[bool, str]:
    """(whether the demo data `data` asks for fits in this machine's memory, the message if not): each
    image and its lesion mask take a byte per pixel. Other data are as large as their files."""
    if data.dataset != "synthetic" or not image_size_ok(data.image_size)[0]:
        return True, ""  # other data, or a size refused with its own message
    images = sum(max(n, 0) for n in (data.synthetic_train, data.synthetic_val, data.synthetic_test))
    need, have = 2 * images * data.image_size**2, host_memory_bytes()
    if have is None or need <= DEMO_MEMORY_SHARE * have:
        return True, ""
    return False, (
        f"the demo data would take {need / 2**30:,.1f} GB of memory ({images:,} images at {data.image_size} px); "
        f"this machine has {have / 2**30:,.0f} GB. Use fewer demo images or a smaller image size."
    )


@dataclass
class TrainConfig:
    """Everything a run depends on. `None` temperatures and weights mean "the method's published default"."""

    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "the data", "cli": False})
    method: str = setting("tss-kd", "training objective", choices=tuple(METHODS))
    t_target: float | None = setting(None, "target-class temperature (default: 4.0)")
    t_nontarget: float | None = setting(None, "non-target temperature (default: 0.4 for tss-kd, else t-target)")
    kd_weight: float | None = setting(None, "lambda, the KD term's weight (default: 1.0)")
    kd_scaling: str | None = setting(
        "nontarget",
        "TSS-KD: scale the KL by t_nontarget**2 (nontarget, stable from scratch) or t_target**2 (paper)",
        choices=KD_SCALINGS,
    )  # runs made before it existed read as "paper" (see from_dict)
    kd_warmup: int | None = setting(
        10,
        "grow the KD weight linearly from 1/EPOCHS to 1 over the first EPOCHS epochs; 0: no warm-up",
        metavar="EPOCHS",
    )
    stop_on_collapse: bool = setting(
        False, "end the run as failed when it collapses to a constant output (it is flagged either way)"
    )
    ps_alpha: float | None = setting(None, "PS-KD final alpha (default: 0.8)")
    rga: bool = setting(True, "regional gamma augmentation")
    gamma_min: float = setting(0.5, "RGA: smallest gamma")
    gamma_max: float = setting(2.0, "RGA: largest gamma")
    arch: str = setting("resnet18", "network", choices=ARCHS)
    pretrained: str | None = setting(
        None, "start from weights: a local torchvision file (.pth or .safetensors) or a run folder (default: none)"
    )
    optimizer: str = setting("sgd", "optimizer", choices=OPTIMIZERS)
    lr: float = setting(0.01, "initial learning rate")
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(1e-4, "L2 weight decay")
    epochs: int = setting(100, "passes over the training split")
    batch_size: int = setting(128, "images per step (global, under torchrun)")
    poly_power: float = setting(0.9, "power of the polynomial lr decay")
    amp: str = setting(
        "auto",
        "bf16 autocast (auto: on GPUs and on CPUs where it trains faster: AMX, or AVX-512 BF16 on AMD)",
        choices=AMP_CHOICES,
    )
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    cuda_graphs: bool | None = setting(
        None, "replay each training step from a CUDA graph (default: on for one GPU with the data in its memory)"
    )
    seed: int = setting(0, "seed of the weights, data order and augmentation")
    eval_batch_size: int = setting(1024, "images per evaluation batch")
    runs_dir: str = setting(RUNS_DIR, "where run folders are made")
    name: str | None = setting(None, "run name (default: <dataset>-<method>)")
    preset: str | None = setting(
        None,
        f"start from a recipe (paper: Liu et al. 2025 exactly; quick: {QUICK_TEXT}); flags given as well still apply",
        choices=tuple(PRESETS),
    )  # recorded in the run; applied by the CLI and the studio, not here

    def resolved(self) -> TrainConfig:
        """Fill method defaults and check every value; raise `StudioError` on the first bad one."""
        m = get_method(self.method)
        cfg = replace(
            self,
            t_target=m.t_target if self.t_target is None else self.t_target,
            t_nontarget=(m.t_nontarget or m.t_target) if self.t_nontarget is None else self.t_nontarget,
            kd_weight=m.kd_weight if self.kd_weight is None else self.kd_weight,
            ps_alpha=(m.ps_alpha or 0.8) if self.ps_alpha is None else self.ps_alpha,
            kd_scaling=self.kd_scaling or "nontarget",  # null in the config of a method without it
            kd_warmup=0 if self.kd_warmup is None else self.kd_warmup,
            name=self.name or f"{self.data.dataset}-{self.method}",
            data=self.data.resolved(),
        )
        for seed in (cfg.seed, cfg.data.seed):
            whole_number(seed, "seed")
        checks = [
            (
                all(MIN_TEMPERATURE <= t < math.inf for t in (cfg.t_target, cfg.t_nontarget)),
                f"temperatures must be positive numbers of at least {MIN_TEMPERATURE:g}.",
            ),
            (0 <= cfg.kd_weight < math.inf, "the KD weight must be a number, not negative."),
            (
                cfg.kd_scaling in KD_SCALINGS,
                f"unknown KD scaling '{cfg.kd_scaling}'; choose one of {', '.join(KD_SCALINGS)}.",
            ),
            (cfg.kd_warmup >= 0, "the KD warm-up must be 0 or more epochs."),
            (cfg.preset in (None, *PRESETS), f"unknown preset '{cfg.preset}'; choose one of {', '.join(PRESETS)}."),
            (0 <= cfg.ps_alpha <= 1, "the PS-KD alpha must be between 0 and 1."),
            (0 < cfg.gamma_min <= cfg.gamma_max, "gamma range must satisfy 0 < gamma-min <= gamma-max."),
            (cfg.arch in ARCHS, f"unknown architecture '{cfg.arch}'; choose one of {', '.join(ARCHS)}."),
            (
                cfg.optimizer in OPTIMIZERS,
                f"unknown optimizer '{cfg.optimizer}'; choose one of {', '.join(OPTIMIZERS)}.",
            ),
            (0 < cfg.lr <= MAX_LR, f"the learning rate must be a positive number, at most {MAX_LR:g}."),
            (cfg.weight_decay >= 0 and 0 <= cfg.momentum < 1, "weight decay must be >= 0 and momentum in [0, 1)."),
            (
                cfg.data.dataset != "synthetic"
                or min(cfg.data.synthetic_train, cfg.data.synthetic_val, cfg.data.synthetic_test) >= 1,
                "the demo data needs at least one training image and one image in each split.",
            ),
            (
                cfg.data.dataset in DATASETS,
                f"unknown dataset '{cfg.data.dataset}'; choose one of {', '.join(DATASETS)}.",
            ),
            data_path_given(cfg.data),
            image_size_ok(cfg.data.image_size),
            (
                cfg.data.resize in RESIZE_FILTERS,
                f"unknown resize filter '{cfg.data.resize}'; choose one of {', '.join(RESIZE_FILTERS)}.",
            ),
            demo_data_fits(cfg.data),
            (cfg.epochs >= 1, "train for at least one epoch."),
            (cfg.batch_size >= 2, "the batch size must be at least 2 (batch norm needs two images)."),
            (cfg.eval_batch_size >= 1, "the evaluation batch size must be at least 1."),
            (cfg.amp in AMP_CHOICES, f"unknown --amp '{cfg.amp}'; choose one of {', '.join(AMP_CHOICES)}."),
        ]
        for ok, message in checks:
            if not ok:
                raise StudioError(message)
        return cfg

    def augment(self, size: int):
        from core.augment import RegionalGamma, TrainAugment

        rga = RegionalGamma(gamma_range=(self.gamma_min, self.gamma_max)) if self.rga else None
        return TrainAugment(size=size, rga=rga)

    @staticmethod
    def from_dict(d: dict) -> TrainConfig:
        """A config saved by any version: runs made before the stable KD scaling and the warm-up existed
        trained with the paper's scaling and no warm-up, and those made before the resize filter was a
        setting resized with bilinear; each is read back so."""
        d = {"kd_scaling": "paper", "kd_warmup": 0, **d}
        d["data"] = DataConfig(**{"resize": RESIZE_BEFORE, **d.get("data", {})})
        return TrainConfig(**d)


# The settings that belong to one method or another. Each method says which it uses (core.methods); the
# others are hidden in the Train form and recorded as null in a run's config, report and table.
METHOD_SETTINGS = ("t_target", "t_nontarget", "kd_weight", "kd_scaling", "kd_warmup", "ps_alpha")


def applies(method: str) -> tuple[str, ...]:
    """The method-specific settings `method` uses (see METHOD_SETTINGS)."""
    return get_method(method).uses


def warmup_shortfall(cfg: TrainConfig) -> float | None:
    """The share of the KD weight that the last epoch reaches when the KD warm-up outlasts the run (so KD
    never trains at full weight); None when it reaches it all, or the method has no warm-up."""
    if "kd_warmup" not in applies(cfg.method) or cfg.epochs < 1:
        return None
    share = kd_warmup_factor(cfg.epochs - 1, cfg.kd_warmup or 0)
    return share if share < 1 else None


def to_record(cfg: TrainConfig) -> dict:
    """A run's config as saved in its folder: method settings the method does not use are null."""
    record = asdict(cfg)
    for name in METHOD_SETTINGS:
        if name not in applies(cfg.method):
            record[name] = None
    return record


def record_differences(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(name, a's value, b's value) for each setting two run records (`to_record`) give differently, the data's
    by their own names."""
    out = []
    for key in sorted(a.keys() | b.keys()):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out += record_differences(a[key], b[key])
        elif a.get(key) != b.get(key):
            out.append((key, a.get(key), b.get(key)))
    return out
