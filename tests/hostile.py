"""A corpus of hostile and odd files, generated on the spot: (name, path, expected) where expected is
"ok" or a piece of the one error message the studio must give."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from helpers import OJPH, compress_dicom, declare_compressed, htj2k_dicom, write_dicom
from PIL import Image
from pydicom.uid import HTJ2K, MPEG4HP41, JPEG2000Lossless

GRAY = (np.add.outer(np.arange(48), np.arange(64)) * 2).astype(np.uint8)
RGB = np.dstack([GRAY, 255 - GRAY, np.full_like(GRAY, 60)])


def _bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, **kw)
    return buf.getvalue()


def build(root: Path) -> list[tuple[str, Path, str]]:
    root.mkdir(parents=True, exist_ok=True)
    items: list[tuple[str, Path, str]] = []

    def add(name: str, data: bytes, expected: str):
        (root / name).write_bytes(data)
        items.append((name, root / name, expected))

    png = _bytes(Image.fromarray(RGB), format="PNG")
    jpg = _bytes(Image.fromarray(RGB), format="JPEG", quality=90)
    add("zero-bytes.png", b"", "empty")
    add("truncated.png", png[: len(png) // 2], "damaged or truncated")
    add("truncated.jpg", jpg[: len(jpg) // 3], "damaged or truncated")
    add("notes.png", b"Patient notes, not a picture at all.\n" * 20, "not an image")
    add("bomb.png", _bytes(Image.new("1", (30_000, 30_000)), format="PNG"), "too large")
    add("deep16.png", _bytes(Image.fromarray(GRAY.astype(np.uint16) * 200), format="PNG"), "ok")
    add("deep16.tif", _bytes(Image.fromarray(GRAY.astype(np.uint16) * 200), format="TIFF"), "ok")
    add("rgba.png", _bytes(Image.fromarray(np.dstack([RGB, np.full_like(GRAY, 200)])), format="PNG"), "ok")
    add("palette.png", _bytes(Image.fromarray(RGB).quantize(32), format="PNG"), "ok")
    add("cmyk.jpg", _bytes(Image.fromarray(RGB).convert("CMYK"), format="JPEG"), "ok")
    frames = [Image.fromarray(GRAY), Image.fromarray(255 - GRAY)]
    add("animated.gif", _bytes(frames[0], format="GIF", save_all=True, append_images=frames[1:], duration=100), "ok")
    add("multipage.tif", _bytes(frames[0], format="TIFF", save_all=True, append_images=frames[1:]), "ok")

    deep = GRAY.astype(np.uint16) * 16
    items.append(("no-pixels.dcm", write_dicom(root / "no-pixels.dcm", deep, pixel_data=False), "no pixel data"))
    items.append(("mono1.dcm", write_dicom(root / "mono1.dcm", deep, photometric="MONOCHROME1"), "ok"))
    items.append(("rgb.dcm", write_dicom(root / "rgb.dcm", RGB, photometric="RGB"), "ok"))
    items.append(("frames.dcm", write_dicom(root / "frames.dcm", np.stack([deep, deep // 2])), "ok"))
    items.append(("IM0000", write_dicom(root / "IM0000", deep, window=(1500, 2000)), "ok"))
    lossless = compress_dicom(root / "IM0000", root / "jpeg-lossless.dcm", "JPEGLosslessProcess14_1")
    items.append(("jpeg-lossless.dcm", lossless, "ok"))
    if OJPH:
        items.append(("htj2k-lossless.dcm", htj2k_dicom(root / "IM0000", root / "htj2k-lossless.dcm"), "ok"))
    # A JPEG 2000 stream cut after its first marker, declared as JPEG 2000 and as High-Throughput JPEG 2000 (a
    # decoder is installed for each, the data is damaged), and as H.264 video, which no decoder here reads.
    for name, syntax, expected in (
        ("j2k.dcm", JPEG2000Lossless, "damaged"),
        ("htj2k.dcm", HTJ2K, "damaged"),
        ("h264.dcm", MPEG4HP41, "cannot decode"),
    ):
        items.append((name, declare_compressed(write_dicom(root / name, deep), syntax), expected))
    return items
