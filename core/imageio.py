"""Read any scan the studio accepts into a plain uint8 array, the same way for training and prediction.

Accepted: PNG, JPEG, TIFF, BMP, GIF (8- or 16-bit; grayscale, RGB, RGBA, palette, CMYK; the first frame
of a multi-frame file) and DICOM, compressed or not, with or without a file extension. Intensities deeper
than 8 bits are stretched from the image's own minimum to its maximum; DICOM gets its modality and VOI LUT
(window) first and MONOCHROME1 is inverted. Nothing that identifies a patient is read into the result; a
DICOM file that says text is burned into its pixels (BurnedInAnnotation YES) is marked so
(`info["burned_in_annotation"]`), since its pixels themselves may then identify the patient.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from core import isolated
from core.errors import StudioError

# A scan larger than this many pixels is refused instead of decoded (decompression bombs), and so is a
# file larger than this many bytes.
MAX_PIXELS = 64_000_000
MAX_FILE_BYTES = 512 * 2**20
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif"}

# How a scan of another size is brought to the model's: the filter is recorded with the data's config and the
# model (`ModelSpec.resize`), so training and Diagnose resize alike. Lanczos, the default: the demo model
# flagged demo scans saved at 2-4x their size and read back as unlike its training data 53% of the time through
# bilinear (PIL's widens as it shrinks, so it blurs) and 12% through Lanczos, and gave them the answer of the
# scan at its own size 92% and 97% of the time (bench/resize.py). Bilinear: how the studio resized before.
RESIZE_FILTERS = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR}
RESIZE = "lanczos"
RESIZE_BEFORE = "bilinear"


@dataclass
class Scan:
    """A decoded scan: `pixels` uint8 (H, W) for grayscale or (H, W, 3) for colour; `info` is safe to show."""

    pixels: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return 1 if self.pixels.ndim == 2 else 3


def is_dicom(path: Path) -> bool:
    """True when the file carries the DICOM 'DICM' marker after its 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def stretch_to_uint8(a: np.ndarray) -> np.ndarray:
    """Map an array's own min..max onto 0..255 (a flat image becomes 0)."""
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _collapse_gray(rgb: np.ndarray) -> np.ndarray:
    """An RGB array whose three channels are equal is grayscale; return it as (H, W)."""
    if rgb.ndim == 3 and np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0])
    return rgb


def _read_pil(path: Path) -> Scan:
    name = path.name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                frames = getattr(im, "n_frames", 1)
                im.seek(0)
                im.load()
                fmt = im.format or "image"
                mode = im.mode
                if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                    pixels = stretch_to_uint8(np.array(im))
                elif mode in ("1", "L", "LA", "La"):
                    pixels = np.array(im.convert("L"))
                else:  # P, PA, RGB, RGBA, RGBa, CMYK, YCbCr, LAB, HSV
                    pixels = _collapse_gray(np.array(im.convert("RGB")))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise StudioError(f"{name}: the image is too large to open (over {MAX_PIXELS:,} pixels).") from None
    except UnidentifiedImageError:
        raise StudioError(f"{name}: not an image or DICOM file this studio can read.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise StudioError(f"{name}: the image file is damaged or truncated ({e}).") from None
    except Exception as e:  # a decoder of untrusted bytes: any other failure also means a damaged file
        raise StudioError(f"{name}: the image file is damaged ({type(e).__name__}).") from None
    if pixels.size == 0:
        raise StudioError(f"{name}: the image has no pixels.")
    info = {"format": fmt, "mode": mode, "size": [int(pixels.shape[1]), int(pixels.shape[0])]}
    if frames > 1:
        info["frames"] = int(frames)
        info["frame_used"] = 0
    return Scan(pixels, info)


def _code(value, default: str) -> str:
    """A DICOM code string (CS) fit to show: short capitals and digits only, else the default."""
    text = str(value or "").strip().upper()
    return text if re.fullmatch(r"[A-Z0-9 _]{1,16}", text) else default


# How a compressed DICOM was stored, in a few words; a lossy compression is worth knowing before trusting detail.
COMPRESSIONS = {
    "JPEGBaseline8Bit": "JPEG (lossy)",
    "JPEGExtended12Bit": "JPEG 12-bit (lossy)",
    "JPEGLossless": "JPEG lossless",
    "JPEGLosslessSV1": "JPEG lossless",
    "JPEGLSLossless": "JPEG-LS lossless",
    "JPEGLSNearLossless": "JPEG-LS near-lossless (lossy)",
    "JPEG2000Lossless": "JPEG 2000 lossless",
    "JPEG2000": "JPEG 2000 (lossy or lossless)",
    "RLELossless": "RLE lossless",
    "HTJ2KLossless": "HTJ2K lossless",
    "HTJ2KLosslessRPCL": "HTJ2K lossless",
    "HTJ2K": "HTJ2K (lossy or lossless)",
}

# pydicom's decoder plugins that run in this process: its own (RLE) and Pillow's (JPEG baseline, JPEG 2000).
# Every other one (GDCM; pylibjpeg, the one for High-Throughput JPEG 2000) runs in the worker process of
# core.isolated, so that a decoder crash on a damaged file costs the worker, not the studio.
IN_PROCESS = ("pydicom", "pillow")


def _transfer_syntax(ds):
    """`ds`'s transfer syntax UID when pydicom knows it as one; None when it is missing, unknown, or another
    kind of UID (a hostile file can put a storage class there)."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return syntax if syntax is not None and syntax.is_transfer_syntax else None


def _dicom_pixels(ds, arr: np.ndarray) -> tuple[np.ndarray, dict]:
    """Apply the modality and VOI LUTs to `arr`, the first frame (or take colour as is); say what was done."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    photometric = _code(ds.get("PhotometricInterpretation"), "MONOCHROME2")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    info: dict = {"format": "DICOM", "modality": _code(ds.get("Modality"), "unknown"), "photometric": photometric}
    burned = _code(ds.get("BurnedInAnnotation"), "")  # (0028,0301): text such as a name drawn into the pixels
    if burned in ("YES", "NO"):
        info["burned_in_annotation"] = burned == "YES"
    syntax = _transfer_syntax(ds)
    if syntax is not None and syntax.is_compressed:
        info["compression"] = COMPRESSIONS.get(syntax.keyword, syntax.name)
    if frames > 1:
        info["frames"] = frames
        info["frame_used"] = 0
    if samples == 3 or arr.ndim == 3:
        pixels = _collapse_gray(arr.astype(np.uint8) if arr.dtype == np.uint8 else stretch_to_uint8(arr))
        info["window"] = "none (colour image)"
    else:
        values = apply_modality_lut(arr, ds)
        if "WindowCenter" in ds and "WindowWidth" in ds:
            center, width = ds.WindowCenter, ds.WindowWidth
            center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
            width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
            info["window"] = {"center": center, "width": width}
            values = apply_voi_lut(values, ds)
        elif "VOILUTSequence" in ds:
            info["window"] = "VOI LUT from file"
            values = apply_voi_lut(values, ds)
        else:
            info["window"] = "full range (min to max)"
        pixels = stretch_to_uint8(values)
        if photometric == "MONOCHROME1":
            pixels = 255 - pixels
    return pixels, info


def _pixel_data_failure(name: str, ds, error: Exception) -> str:
    """Why a DICOM's pixel data did not decode: a compression no installed decoder reads (pydicom's own for
    RLE, Pillow's for JPEG baseline and JPEG 2000, GDCM's for JPEG lossless, JPEG-LS and the rest, pylibjpeg's
    for High-Throughput JPEG 2000), or data that a decoder for it could not read. Names the transfer syntax by
    its standard name only."""
    syntax = _transfer_syntax(ds)
    if syntax is not None and not syntax.is_compressed:
        return f"{name}: the DICOM pixel data cannot be read ({type(error).__name__})."
    label = "an unrecognised transfer syntax" if syntax is None else syntax.name
    if not _decoders(ds):
        return f"{name}: the DICOM image is compressed as {label}, which this install cannot decode."
    return f"{name}: the DICOM image is compressed as {label}, and that data is damaged; it cannot be decoded."


def _open_dicom(path: Path):
    """Parse a DICOM file's elements (pure Python; pixel data not decoded yet) and check it holds an image
    of a size worth decoding."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    name = path.name
    # pydicom's validation warnings quote element values, which can be patient identifiers: keep them quiet.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        ds = pydicom.dcmread(path, force=True)
        ds.get("PixelData")  # reading elements is lazy: damage shows up here
    except InvalidDicomError:
        raise StudioError(f"{name}: not a DICOM file this studio can read.") from None
    except Exception as e:  # a parser of untrusted bytes: any failure means a damaged file
        # The message names only the kind of damage: pydicom's own text can quote element values.
        raise StudioError(f"{name}: the DICOM file is damaged ({type(e).__name__}).") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise StudioError(f"{name}: the DICOM file holds no image (no pixel data).")
    try:
        area = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
    except Exception:  # nonsense dimensions, or elements that do not parse: the decoder says which
        area = 0
    if area > MAX_PIXELS:  # before decoding: a small compressed file can claim a huge image
        raise StudioError(f"{name}: the image is too large to open (over {MAX_PIXELS:,} pixels).")
    return ds


def _decoders(ds) -> tuple[str, ...]:
    """The installed pydicom decoder plugins for `ds`'s compressed pixel data; () when it is not compressed
    (or no decoder exists: decoding then says so)."""
    from pydicom.pixels import get_decoder

    syntax = _transfer_syntax(ds)
    if syntax is None or not syntax.is_compressed:
        return ()
    try:
        return tuple(get_decoder(syntax).available_plugins)
    except NotImplementedError:  # pydicom has no decoder for it at all
        return ()


def _decode(ds, name: str, plugin: str) -> Scan:
    """Decode the first frame of `ds` with pydicom's `plugin` ("" lets pydicom choose) into a Scan."""
    try:
        ds.pixel_array_options(index=0, decoding_plugin=plugin)  # the first frame is the one used
        arr = ds.pixel_array
    except Exception as e:  # no decoder for its compression, damaged pixel data, or attributes that contradict it
        raise StudioError(_pixel_data_failure(name, ds, e)) from None
    try:
        pixels, info = _dicom_pixels(ds, arr)
    except Exception as e:  # attributes that contradict the pixel data, or values of the wrong kind
        raise StudioError(f"{name}: the DICOM file is damaged ({type(e).__name__}).") from None
    if pixels.ndim not in (2, 3) or pixels.size == 0:
        raise StudioError(f"{name}: the DICOM image has no usable pixels.")
    info["size"] = [int(pixels.shape[1]), int(pixels.shape[0])]
    return Scan(pixels, info)


def _decode_isolated(path: str, plugins: tuple[str, ...]) -> Scan:
    """`_read_dicom` with the first of `plugins` that decodes the file, in the worker process of core.isolated."""
    ds, name = _open_dicom(Path(path)), Path(path).name
    for plugin in plugins[:-1]:
        try:
            return _decode(ds, name, plugin)
        except StudioError:
            pass
    return _decode(ds, name, plugins[-1])


def _read_dicom(path: Path) -> Scan:
    """pydicom's own decoders and Pillow's run here (IN_PROCESS); the others, which can abort the process on a
    damaged file, run in a worker process (core.isolated): for what only they read (JPEG lossless, JPEG-LS,
    High-Throughput JPEG 2000), and for what the others failed on (12-bit JPEG, which Pillow does not read)."""
    ds = _open_dicom(path)
    plugins = _decoders(ds)
    here = [p for p in plugins if p in IN_PROCESS]
    elsewhere = tuple(p for p in plugins if p not in IN_PROCESS)
    if here or not elsewhere:
        try:
            return _decode(ds, path.name, here[0] if here else "")
        except StudioError:
            if not elsewhere:
                raise
    try:
        return isolated.call(_decode_isolated, str(path), elsewhere)
    except isolated.Crashed as e:
        raise StudioError(_pixel_data_failure(path.name, ds, e)) from None


def read_scan(path: str | Path) -> Scan:
    """Decode one file into a `Scan`; raise `StudioError` naming the file when it cannot be read."""
    path = Path(path)
    if path.is_dir():
        raise StudioError(f"{path.name or path}: a folder, not a file.")
    if not path.is_file():
        raise StudioError(f"{path.name or path}: no such file.")
    size = path.stat().st_size
    if size == 0:
        raise StudioError(f"{path.name}: the file is empty.")
    if size > MAX_FILE_BYTES:
        raise StudioError(
            f"{path.name}: the file is too big ({size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MB)."
        )
    if is_dicom(path):
        return _read_dicom(path)
    try:
        return _read_pil(path)
    except StudioError as e:
        # A DICOM without the 128-byte preamble has no marker; give it one chance as DICOM.
        if path.suffix.lower() not in IMAGE_SUFFIXES and "not an image" in str(e):
            try:
                return _read_dicom(path)
            except StudioError:
                pass
        raise


def to_model_array(scan: Scan, *, size: int, channels: int, resize: str = RESIZE) -> np.ndarray:
    """Resize a scan to `size` x `size` with the filter `resize` (`RESIZE_FILTERS`) and give it `channels` (1 or
    3) channels; uint8 (C, size, size)."""
    if channels not in (1, 3):
        raise StudioError(f"channels must be 1 or 3, not {channels}.")
    if resize not in RESIZE_FILTERS:
        raise StudioError(f"unknown resize filter '{resize}'; choose one of {', '.join(RESIZE_FILTERS)}.")
    im = Image.fromarray(scan.pixels)
    im = im.convert("L" if channels == 1 else "RGB")
    if im.size != (size, size):
        im = im.resize((size, size), RESIZE_FILTERS[resize])
    a = np.array(im, dtype=np.uint8)
    return a[None] if channels == 1 else np.ascontiguousarray(a.transpose(2, 0, 1))
