"""Paths typed in the browser: confined to the data root (no '..', no absolute paths, no symlinks out)."""

from __future__ import annotations

from pathlib import Path

from core.errors import StudioError


def confine(root: str | Path, user_path: str) -> Path:
    """Resolve `user_path` relative to `root`; refuse anything that ends up outside it."""
    text = (user_path or "").strip()
    if not text:
        raise StudioError("give a path inside the data folder.")
    if Path(text).is_absolute() or text.startswith("~"):
        raise StudioError("give the path relative to the data folder, not an absolute path.")
    base = Path(root).resolve()
    target = (base / text).resolve()
    if target != base and base not in target.parents:
        raise StudioError(f"'{text}' is outside the data folder.")
    if not target.exists():
        raise StudioError(f"'{text}' does not exist in the data folder.")
    return target
