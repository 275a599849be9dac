"""Fuzzing the decoders: any bytes, and valid files with bytes flipped or cut, must give a Scan or one
StudioError, never another exception. Bounded to well under a minute."""

import io
from pathlib import Path

import numpy as np
import pytest
from helpers import OJPH, compress_dicom, htj2k_dicom, write_dicom
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.errors import StudioError
from core.imageio import Scan, read_scan

pytestmark = pytest.mark.slow  # thousands of generated files: `make test-fast` leaves them out


def _seeds(tmp: Path) -> list[bytes]:
    gray = (np.add.outer(np.arange(16), np.arange(16)) * 8).astype(np.uint8)
    out = []
    for fmt in ("PNG", "JPEG", "TIFF", "BMP", "GIF"):
        buf = io.BytesIO()
        Image.fromarray(gray).save(buf, format=fmt)
        out.append(buf.getvalue())
    out.append(write_dicom(tmp / "seed.dcm", gray.astype(np.uint16) * 100, window=(800, 1600)).read_bytes())
    return out


SEEDS = _seeds(Path(__import__("tempfile").mkdtemp()))
# The compressions whose decoders are native code: GDCM (JPEG lossless, JPEG-LS), Pillow's OpenJPEG, RLE, and
# pylibjpeg's OpenJPEG (High-Throughput JPEG 2000, where OpenJPH's encoder is at hand to make the seed).
COMPRESSED = ("JPEGLosslessProcess14_1", "JPEGLSLossless", "JPEG2000Lossless", "RLELossless")


def _compressed_seeds(tmp: Path) -> list[bytes]:
    gray = (np.add.outer(np.arange(16), np.arange(16)) * 8).astype(np.uint16) * 100
    plain = write_dicom(tmp / "plain.dcm", gray, window=(800, 1600))
    seeds = [compress_dicom(plain, tmp / f"{syntax}.dcm", syntax).read_bytes() for syntax in COMPRESSED]
    if OJPH:
        seeds.append(htj2k_dicom(plain, tmp / "htj2k.dcm").read_bytes())
    return seeds


COMPRESSED_SEEDS = _compressed_seeds(Path(__import__("tempfile").mkdtemp()))
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        scan = read_scan(path)
    except StudioError as e:
        assert path.name in str(e)
        return
    assert isinstance(scan, Scan) and scan.pixels.dtype == np.uint8 and scan.pixels.size > 0


@FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(["", ".png", ".jpg", ".dcm", ".tif"]))
def test_random_bytes(tmp_path, data, suffix):
    check(tmp_path, data, suffix)


@FUZZ
@given(
    seed=st.sampled_from(range(len(SEEDS))),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10**6),
)
def test_mutated_valid_files(tmp_path, seed, flips, cut):
    data = bytearray(SEEDS[seed])
    for pos, value in flips:
        data[pos % len(data)] = value
    data = bytes(data[: max(1, cut % (len(data) + 1))])
    check(tmp_path, data, ["", ".png", ".jpg", ".tif", ".bmp", ".gif", ".dcm"][seed] if seed < 6 else "")


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.sampled_from(range(len(COMPRESSED_SEEDS))),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.integers(0, 10**6),
    truncate=st.booleans(),
)
def test_mutated_compressed_dicom(tmp_path, seed, flips, cut, truncate):
    """Bytes flipped in the last 300 bytes (the compressed stream) or anywhere; GDCM aborts its process on
    some of these, which must cost only core.isolated's worker (where pylibjpeg runs too), never this process."""
    data = bytearray(COMPRESSED_SEEDS[seed])
    tail = max(0, len(data) - 300)
    for pos, value in flips:
        data[(tail + pos % 300) % len(data) if pos % 5 else pos % len(data)] = value
    if truncate:
        data = data[: max(1, cut % (len(data) + 1))]
    check(tmp_path, bytes(data), ".dcm")
