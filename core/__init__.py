"""TSS-KD Studio engine: data, augmentation, losses, model, training, evaluation, inference.

This package never imports the UI; it runs headless from the CLI and under torchrun.
"""

from core.errors import StudioError

__all__ = ["StudioError"]
