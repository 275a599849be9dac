"""Images a handler returns, as PNG files written once each.

Gradio encodes an image array again for every output it fills (the Diagnose tab shows one overlay in three
places) and writes it into its cache in place, so two requests with the same picture can serve each other a
half-written file. A file path is instead copied into the cache once, under its content hash, and renamed
into place. The files here are named at random (never after a scan), carry no metadata, and are removed
once gradio has had time to copy them, and when the studio exits.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
import weakref
from pathlib import Path

import numpy as np
from PIL import Image


class ImageFiles:
    def __init__(self, keep_s: float = 600.0):
        self.folder = Path(tempfile.mkdtemp(prefix="tsskd-studio-images-"))
        self.keep_s = keep_s
        self._swept = time.monotonic()
        self._lock = threading.Lock()
        weakref.finalize(self, shutil.rmtree, self.folder, True)

    def png(self, image: np.ndarray) -> str:
        """Write uint8 (H, W) or (H, W, 3) `image` as a PNG; returns its path."""
        self._sweep()
        path = self.folder / f"{uuid.uuid4().hex}.png"
        tmp = path.with_suffix(".tmp")
        Image.fromarray(image).save(tmp, format="PNG", compress_level=1)  # lossless either way; 1 is fastest
        tmp.replace(path)
        return str(path)

    def new_folder(self) -> Path:
        """A fresh folder for files handed to gradio under their own names (a report, a run's download),
        removed like the images."""
        self._sweep()
        path = self.folder / uuid.uuid4().hex
        path.mkdir()
        return path

    def _sweep(self) -> None:
        """Remove files and folders older than `keep_s`, at most once a minute."""
        now = time.monotonic()
        with self._lock:
            if now - self._swept < 60:
                return
            self._swept = now
        cutoff = time.time() - self.keep_s
        for f in self.folder.iterdir():
            try:
                if f.stat().st_mtime < cutoff:
                    shutil.rmtree(f, True) if f.is_dir() else f.unlink()
            except OSError:
                pass  # already gone
