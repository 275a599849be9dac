"""Test helpers: files and datasets built on the spot (nothing is downloaded)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, HTJ2KLossless, SecondaryCaptureImageStorage, generate_uid

# OpenJPH's HTJ2K encoder (Debian's openjph-tools; .ci/run installs it), None where it is missing.
OJPH = shutil.which("ojph_compress")
needs_ojph = pytest.mark.skipif(OJPH is None, reason="needs OpenJPH's ojph_compress (.ci/run installs openjph-tools)")

# Made-up identifiers that must never show up in any output.
IDENTIFIERS = {
    "PatientName": "Testpatient^Imaginary",
    "PatientID": "ZZ-4711-XY",
    "PatientBirthDate": "19010203",
    "InstitutionName": "Nowhere General Hospital",
    "AccessionNumber": "ACC99887766",
}


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] = (1.0, 0.0),
    preamble: bool = True,
    pixel_data: bool = True,
    modality: str = "CT",
    burned_in: str | None = None,
) -> Path:
    """Write an uncompressed DICOM holding `pixels` (uint8/uint16 (H, W), uint8 (H, W, 3) or (F, H, W))."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for key, value in IDENTIFIERS.items():
        setattr(ds, key, value)
    ds.Modality = modality
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    rgb = photometric == "RGB"
    frames = pixels.shape[0] if (pixels.ndim == 3 and not rgb) else 1
    rows, cols = pixels.shape[1:3] if frames > 1 else pixels.shape[:2]
    ds.Rows, ds.Columns = int(rows), int(cols)
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if pixel_data:
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.preamble = None
        ds.save_as(path, enforce_file_format=False)
    return path


def write_dicom_folder(folder: Path, n: int, *, burned: int = 0, seed: int = 0) -> Path:
    """`n` demo scans at 16 px as CR DICOM files in class subfolders of `folder` (class0, class1); the first
    `burned` say that text is burned into their pixels (BurnedInAnnotation YES), the rest NO or nothing, in turn."""
    from core.synthetic import render

    images, labels, _ = render(n, size=16, seed=seed)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        sub = folder / f"class{int(label) % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        tag = "YES" if i < burned else ("NO" if i % 2 else None)
        write_dicom(sub / f"IM{i:04d}", image[0].numpy(), modality="CR", burned_in=tag)
    return folder


def compress_dicom(src: Path, dst: Path, syntax: str) -> Path:
    """Re-encode the DICOM `src` as `dst` with GDCM under the transfer syntax named `syntax` (a member of
    gdcm.TransferSyntax, e.g. "JPEGLosslessProcess14_1"): the compressed files a PACS exports."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read(), src
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change(), syntax
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write(), dst
    if syntax.startswith("JPEGBaseline") and reader.GetImage().GetPixelFormat().GetSamplesPerPixel() == 3:
        # GDCM codes the colour as YCbCr but keeps "RGB"; a real encoder declares what it wrote.
        import pydicom

        ds = pydicom.dcmread(dst)
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.save_as(dst)
    return dst


def htj2k_dicom(src: Path, dst: Path, syntax: str = HTJ2KLossless) -> Path:
    """Re-encode the uncompressed DICOM `src` as `dst` in High-Throughput JPEG 2000 (lossless by default),
    with OpenJPH's `ojph_compress` (OJPH), reversible, and without a colour transform, so that RGB stays RGB."""
    import subprocess

    import pydicom
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(src)
    pixels = ds.pixel_array
    frames = pixels if int(ds.get("NumberOfFrames", 1) or 1) > 1 else pixels[None]
    rgb = ds.SamplesPerPixel == 3
    peak = 255 if pixels.dtype == np.uint8 else 65535
    streams = []
    for i, frame in enumerate(frames):
        raw, out = dst.with_suffix(f".{i}.{'ppm' if rgb else 'pgm'}"), dst.with_suffix(f".{i}.j2c")
        head = f"P{6 if rgb else 5}\n{frame.shape[1]} {frame.shape[0]}\n{peak}\n".encode()
        raw.write_bytes(head + frame.astype(">u2" if peak > 255 else np.uint8).tobytes())
        args = ["-reversible", "true"] + (["-colour_trans", "false"] if rgb else [])
        subprocess.run([OJPH, "-i", raw, "-o", out, *args], check=True, capture_output=True)
        streams.append(out.read_bytes())
        raw.unlink()
        out.unlink()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate(streams)
    ds["PixelData"].VR = "OB"
    ds.save_as(dst, enforce_file_format=True)
    return dst


def declare_compressed(path: Path, syntax: str, stream: bytes = b"\xff\x4f\xff\x51" + b"\x00" * 64) -> Path:
    """Rewrite the DICOM at `path` to hold `stream` as its one encapsulated frame under transfer syntax
    `syntax`; the default stream is a JPEG 2000 codestream cut after its first marker."""
    import pydicom
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_medmnist(path, *, n=(30, 10, 10), size=28, classes=3, rgb=False, multilabel=False):
    g = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        shape = (count, size, size, 3) if rgb else (count, size, size)
        arrays[f"{split}_images"] = g.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (
            g.integers(0, 2, (count, 5)) if multilabel else (np.arange(count) % classes).reshape(-1, 1)
        )
    np.savez(path, **arrays)
    return path


def class_folders(root: Path, counts: dict[str, int]) -> Path:
    """An image folder under `root`: a subfolder per class of `counts`, holding that many 16 px greyscale PNGs
    (a different grey each)."""
    from PIL import Image

    for label, n in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("L", (16, 16), (20 * i) % 256).save(root / label / f"{i}.png")
    return root
