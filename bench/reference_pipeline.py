"""The reference-style training pipeline, rebuilt from its description for side-by-side benchmarks.

Per-sample PIL transforms in DataLoader workers (RandomResizedCrop 0.8..1, regional gamma, contrast and
saturation jitter 0.5, flips, ToTensor, ImageNet normalisation), two views per image, two fp32 passes
(teacher under no_grad, student with backward), SGD, and a `loss.item()` per step for logging, as
reference training scripts do. It computes the same objective as our engine; only the way it gets
there differs. Benchmark code only: the product never uses it.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

from core.augment import IMAGENET_MEAN, IMAGENET_STD
from core.methods import compute_loss


class RegionalGammaPIL:
    """RGA on one PIL image with numpy (normalised form; same cost as the reference's uint8 version)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        arr = np.asarray(img).astype(np.float32) / 255
        h, w = arr.shape[:2]
        lam = max(u := np.random.rand(), 1 - u)
        side = np.sqrt(1 - lam)
        ch, cw = int(h * side), int(w * side)
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
        x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
        arr[y0:y1, x0:x1] = arr[y0:y1, x0:x1] ** np.random.uniform(0.5, 2.0)
        return Image.fromarray((arr * 255).astype(np.uint8))


class TwoViewDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int):
        self.images = images  # uint8 (N, H, W, 3)
        self.labels = labels
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(size, scale=(0.8, 1.0)),
                RegionalGammaPIL(),
                T.ColorJitter(contrast=0.5, saturation=0.5),
                T.RandomHorizontalFlip(),
                T.RandomVerticalFlip(),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        return self.transform(img), self.transform(img), int(self.labels[i])


def make_loader(images: np.ndarray, labels: np.ndarray, *, size: int, batch_size: int, workers: int, device):
    ds = TwoViewDataset(images, labels, size)
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )


def reference_step(model, optimizer, v1, v2, y, device) -> float:
    v1, v2, y = v1.to(device, non_blocking=True), v2.to(device, non_blocking=True), y.to(device, non_blocking=True)
    with torch.no_grad():
        teacher = model(v1)
    student = model(v2)
    loss = compute_loss("tss-kd", student, y, teacher_logits=teacher)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()
