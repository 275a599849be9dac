"""Every accepted file format decodes to the right pixels; bad files give one clear message naming them."""

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers import IDENTIFIERS, compress_dicom, declare_compressed, htj2k_dicom, needs_ojph, write_dicom
from PIL import Image

from core.errors import StudioError
from core.imageio import read_scan, to_model_array

GRAY = (np.add.outer(np.arange(24), np.arange(32)) * 5).astype(np.uint8)  # (24, 32) gradient
RGB = np.stack([GRAY, 255 - GRAY, np.full_like(GRAY, 90)], axis=-1)


def save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("BMP", ".bmp"), ("TIFF", ".tiff"), ("GIF", ".gif")])
def test_lossless_8bit_grayscale_roundtrips_exactly(tmp_path, fmt, suffix):
    scan = read_scan(save(Image.fromarray(GRAY), tmp_path / f"g{suffix}", format=fmt))
    assert scan.channels == 1
    np.testing.assert_array_equal(scan.pixels, GRAY)


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("BMP", ".bmp"), ("TIFF", ".tif")])
def test_lossless_rgb_roundtrips_exactly(tmp_path, fmt, suffix):
    scan = read_scan(save(Image.fromarray(RGB), tmp_path / f"c{suffix}", format=fmt))
    assert scan.channels == 3
    np.testing.assert_array_equal(scan.pixels, RGB)


def test_rgba_drops_alpha_and_palette_expands(tmp_path):
    rgba = np.dstack([RGB, np.full_like(GRAY, 128)])
    np.testing.assert_array_equal(read_scan(save(Image.fromarray(rgba), tmp_path / "a.png")).pixels, RGB)
    pal = Image.fromarray(RGB).quantize(16)
    want = np.array(pal.convert("RGB"))
    np.testing.assert_array_equal(read_scan(save(pal, tmp_path / "p.png")).pixels, want)


def test_gray_looking_rgb_is_read_as_grayscale(tmp_path):
    scan = read_scan(save(Image.fromarray(np.dstack([GRAY] * 3)), tmp_path / "g3.png"))
    assert scan.channels == 1
    np.testing.assert_array_equal(scan.pixels, GRAY)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_is_stretched_from_min_to_max(tmp_path, suffix):
    raw = (GRAY.astype(np.uint16) * 8 + 1000).astype(np.uint16)  # 12-bit-style values
    scan = read_scan(save(Image.fromarray(raw), tmp_path / f"deep{suffix}"))
    want = np.round((raw - raw.min()) * 255.0 / (raw.max() - raw.min())).astype(np.uint8)
    np.testing.assert_array_equal(scan.pixels, want)


def test_jpeg_and_cmyk_jpeg_decode_close_to_source(tmp_path):
    j = read_scan(save(Image.fromarray(RGB), tmp_path / "c.jpg", quality=95))
    assert j.channels == 3 and np.abs(j.pixels.astype(int) - RGB).mean() < 4
    cmyk = read_scan(save(Image.fromarray(RGB).convert("CMYK"), tmp_path / "k.jpg", quality=95))
    assert cmyk.pixels.shape == RGB.shape


def test_multiframe_uses_first_frame(tmp_path):
    frames = [Image.fromarray(GRAY), Image.fromarray(255 - GRAY)]
    path = tmp_path / "multi.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    scan = read_scan(path)
    np.testing.assert_array_equal(scan.pixels, GRAY)
    assert scan.info["frames"] == 2


@pytest.mark.parametrize("preamble,name", [(True, "ct.dcm"), (True, "IM0001"), (False, "IM0002")])
def test_dicom_applies_rescale_and_window(tmp_path, preamble, name):
    stored = (np.arange(32 * 32).reshape(32, 32) * 4).astype(np.uint16)  # 0 .. 4092
    path = write_dicom(tmp_path / name, stored, rescale=(1.0, -1024.0), window=(40.0, 400.0), preamble=preamble)
    scan = read_scan(path)
    hu = stored.astype(float) - 1024
    # linear VOI window: below c - w/2 black, above c + w/2 white
    assert (scan.pixels[hu <= 40 - 200] == 0).all() and (scan.pixels[hu >= 40 + 200] == 255).all()
    mid = (hu > -150) & (hu < 230)
    assert np.all(np.diff(scan.pixels[mid].astype(int)) >= 0)
    assert scan.info["window"] == {"center": 40.0, "width": 400.0} and scan.info["modality"] == "CT"


def test_dicom_monochrome1_is_inverted(tmp_path):
    stored = GRAY.astype(np.uint16) * 16
    m2 = read_scan(write_dicom(tmp_path / "m2.dcm", stored)).pixels
    m1 = read_scan(write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1")).pixels
    np.testing.assert_array_equal(m1, 255 - m2)


def test_dicom_rgb_and_multiframe(tmp_path):
    rgb = read_scan(write_dicom(tmp_path / "rgb.dcm", RGB, photometric="RGB"))
    np.testing.assert_array_equal(rgb.pixels, RGB)
    frames = np.stack([GRAY, 255 - GRAY]).astype(np.uint8)
    mf = read_scan(write_dicom(tmp_path / "mf.dcm", frames))
    np.testing.assert_array_equal(mf.pixels, GRAY)
    assert mf.info["frames"] == 2


def test_dicom_info_carries_no_identifiers(tmp_path):
    scan = read_scan(write_dicom(tmp_path / "id.dcm", GRAY.astype(np.uint16)))
    text = repr(scan.info)
    for value in IDENTIFIERS.values():
        assert value not in text and value.split("^")[0] not in text


@pytest.mark.parametrize(
    ("tag", "marked"), [("YES", True), ("yes ", True), ("NO", False), (None, None), ("MAYBE", None), ("", None)]
)
def test_a_dicom_that_says_text_is_burned_into_its_pixels_is_marked_and_read_the_same(tmp_path, tag, marked):
    plain = read_scan(write_dicom(tmp_path / "plain.dcm", GRAY))
    scan = read_scan(write_dicom(tmp_path / "tagged.dcm", GRAY, burned_in=tag))
    assert scan.info.get("burned_in_annotation") is marked  # only the file's own YES or NO; nothing guessed
    assert np.array_equal(scan.pixels, plain.pixels)


# The compressions a PACS exports. JPEG lossless (the usual one for CR, DX and MG) and JPEG-LS need GDCM;
# before it came in they could not be read at all. High-Throughput JPEG 2000 (DICOMweb's newer choice) needs
# pylibjpeg-openjpeg; the tests encode it with OpenJPH's command-line tool.
HTJ2K = [pytest.param(s, marks=needs_ojph) for s in ("HTJ2KLossless", "HTJ2KLosslessRPCL")]
LOSSLESS = [
    "JPEGLosslessProcess14_1",
    "JPEGLosslessProcess14",
    "JPEGLSLossless",
    "JPEG2000Lossless",
    "RLELossless",
    *HTJ2K,
]


def pack(plain: Path, dst: Path, syntax: str) -> Path:
    """`plain` compressed under `syntax`: HTJ2K by OpenJPH, the rest by GDCM."""
    if syntax.startswith("HTJ2K"):
        return htj2k_dicom(plain, dst, getattr(pydicom.uid, syntax))
    return compress_dicom(plain, dst, syntax)


DEEP = np.random.default_rng(0).integers(0, 60_000, GRAY.shape).astype(np.uint16)  # 16 bits, no structure


@pytest.mark.parametrize("pixels,photometric", [(GRAY, "MONOCHROME2"), (DEEP, "MONOCHROME2"), (RGB, "RGB")])
@pytest.mark.parametrize("syntax", LOSSLESS)
def test_losslessly_compressed_dicom_reads_exactly_like_its_uncompressed_twin(tmp_path, syntax, pixels, photometric):
    plain = write_dicom(tmp_path / "plain.dcm", pixels, photometric=photometric, window=None)
    packed = pack(plain, tmp_path / "packed.dcm", syntax)
    assert pydicom.dcmread(packed).file_meta.TransferSyntaxUID.is_compressed
    scan, twin = read_scan(packed), read_scan(plain)
    np.testing.assert_array_equal(scan.pixels, twin.pixels)
    assert scan.info.pop("compression").endswith("lossless") and "compression" not in twin.info
    assert scan.info == twin.info


@pytest.mark.parametrize("pixels,photometric", [(GRAY, "MONOCHROME2"), (RGB, "RGB")])
def test_jpeg_baseline_dicom_decodes_close_to_its_source(tmp_path, pixels, photometric):
    plain = write_dicom(tmp_path / "plain.dcm", pixels, photometric=photometric)
    scan = read_scan(compress_dicom(plain, tmp_path / "lossy.dcm", "JPEGBaselineProcess1"))
    assert scan.pixels.shape == pixels.shape and scan.info["compression"] == "JPEG (lossy)"
    assert np.abs(scan.pixels.astype(int) - read_scan(plain).pixels).mean() < 4


@pytest.mark.parametrize("syntax", ["ExplicitVRLittleEndian", "JPEGLosslessProcess14_1", "RLELossless", *HTJ2K[:1]])
def test_a_multiframe_dicom_gives_its_first_frame_and_decodes_only_that(tmp_path, syntax, monkeypatch):
    frames = np.stack([DEEP, DEEP // 2, 60_000 - DEEP])
    path = write_dicom(tmp_path / "series.dcm", frames)
    if syntax != "ExplicitVRLittleEndian":
        path = pack(path, tmp_path / "packed.dcm", syntax)
    first = read_scan(write_dicom(tmp_path / "one.dcm", DEEP)).pixels
    asked = []
    real = pydicom.dataset.Dataset.pixel_array_options
    monkeypatch.setattr(
        pydicom.dataset.Dataset, "pixel_array_options", lambda ds, **kw: (asked.append(kw), real(ds, **kw))[1]
    )
    scan = read_scan(path)
    np.testing.assert_array_equal(scan.pixels, first)
    assert scan.info["frames"] == 3 and scan.info["frame_used"] == 0
    if syntax in ("JPEGLosslessProcess14_1", "HTJ2KLossless"):
        assert asked == []  # GDCM and pylibjpeg decode in the worker process (core.isolated), with the same code
    else:
        assert asked[0]["index"] == 0


def test_a_compressed_dicom_that_claims_a_huge_image_is_refused_before_decoding(tmp_path):
    path = compress_dicom(write_dicom(tmp_path / "plain.dcm", DEEP), tmp_path / "bomb.dcm", "RLELossless")
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 65_535, 65_535  # 4.3 gigapixels from a file of a few kB
    ds.save_as(path)
    assert path.stat().st_size < 10_000
    with pytest.raises(StudioError, match="bomb.dcm: the image is too large to open"):
        read_scan(path)


def test_a_file_that_aborts_gdcm_costs_its_worker_not_this_process(tmp_path):
    """Found by fuzzing: one byte changed in this JPEG 2000 stream makes GDCM abort the process it runs in
    (an uncaught C++ exception; Pillow, tried first, fails cleanly). Before core.isolated that ended the
    studio; now the file gets its message and the next files decode in a fresh worker."""
    gray = (np.add.outer(np.arange(16), np.arange(16)) * 8).astype(np.uint16) * 100
    plain = write_dicom(tmp_path / "plain.dcm", gray, window=(800, 1600))
    path = compress_dicom(plain, tmp_path / "abort.dcm", "JPEG2000Lossless")
    ds = pydicom.dcmread(path)
    stream = bytearray(ds.PixelData)
    assert stream[58] == 15
    stream[58] = 32
    ds.PixelData = bytes(stream)
    ds.save_as(path)
    for _ in range(2):  # and again, on the worker started after the first crash
        with pytest.raises(StudioError, match="abort.dcm: the DICOM image is compressed as JPEG 2000 .* damaged"):
            read_scan(path)
        good = read_scan(compress_dicom(plain, tmp_path / "good.dcm", "JPEGLosslessProcess14_1"))
        np.testing.assert_array_equal(good.pixels, read_scan(plain).pixels)


def damaged(path, keep):
    """`path` with its one compressed frame cut to `keep` of its bytes."""
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(path)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: int(len(frame) * keep)]])
    ds.save_as(path)
    return path


@pytest.mark.parametrize("syntax", LOSSLESS)
def test_damaged_compressed_dicom_says_damaged_not_undecodable(tmp_path, syntax):
    plain = write_dicom(tmp_path / "plain.dcm", DEEP)
    path = damaged(pack(plain, tmp_path / "cut.dcm", syntax), keep=0.3)
    with pytest.raises(StudioError) as e:
        read_scan(path)
    assert str(e.value).startswith("cut.dcm: the DICOM image is compressed as ") and "damaged" in str(e.value)


@pytest.mark.parametrize(
    "uid,says",
    [
        ("1.2.840.10008.1.1", "an unrecognised transfer syntax"),  # a known UID, but a service class
        ("1.2.3.4.5.6", "an unrecognised transfer syntax"),
    ],
)
def test_a_transfer_syntax_it_cannot_decode_is_one_clear_message(tmp_path, uid, says):
    path = write_dicom(tmp_path / "odd.dcm", DEEP)
    plain = b"1.2.840.10008.1.2.1\x00"  # explicit VR little endian, as written; the same length replaces it
    path.write_bytes(path.read_bytes().replace(plain, uid.encode().ljust(len(plain), b"\x00")))
    with pytest.raises(StudioError) as e:
        read_scan(path)
    assert str(e.value) == f"odd.dcm: the DICOM image is compressed as {says}, which this install cannot decode."


def test_a_compression_no_installed_decoder_reads_is_named(tmp_path):
    from pydicom.uid import MPEG4HP41

    path = declare_compressed(write_dicom(tmp_path / "video.dcm", DEEP), MPEG4HP41)
    says = "video.dcm: the DICOM image is compressed as MPEG-4 AVC/H.264 .*which this install cannot decode"
    with pytest.raises(StudioError, match=says):
        read_scan(path)


def truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, format="PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return tmp_path / "cut.png"


def write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make,expect",
    [
        (lambda p: write(p / "empty.png", b""), "empty"),
        (lambda p: write(p / "notes.png", b"hello, not a picture"), "not an image"),
        (truncated_png, "damaged or truncated"),
        (lambda p: write_dicom(p / "nopix.dcm", GRAY, pixel_data=False), "no pixel data"),
        (lambda p: p / "missing.png", "no such file"),
        (lambda p: (p / "scans.png").mkdir() or p / "scans.png", "a folder, not a file"),
    ],
)
def test_bad_files_raise_one_clear_error_naming_the_file(tmp_path, make, expect):
    path = make(tmp_path)
    with pytest.raises(StudioError) as e:
        read_scan(path)
    assert path.name in str(e.value) and expect in str(e.value)


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (30_000, 30_000)).save(path)  # a few kB on disk, 900 megapixels decoded
    assert path.stat().st_size < 1_000_000
    with pytest.raises(StudioError, match="too large"):
        read_scan(path)


@pytest.mark.parametrize("channels", [1, 3])
def test_to_model_array_resizes_and_sets_channels(channels):
    from core.imageio import Scan

    for pixels in (GRAY, RGB):
        out = to_model_array(Scan(pixels), size=16, channels=channels)
        assert out.shape == (channels, 16, 16) and out.dtype == np.uint8 and out.flags.writeable


@pytest.mark.parametrize("resize", ["lanczos", "bilinear"])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_lanczos_brings_an_enlarged_scan_back_closer_to_itself_than_bilinear(factor, resize):
    from core.imageio import Scan

    small = np.random.default_rng(factor).integers(0, 256, (24, 24), dtype=np.uint8)  # fine texture, as in scans
    big = np.asarray(Image.fromarray(small).resize((24 * factor, 24 * factor), Image.Resampling.NEAREST))
    back = {r: to_model_array(Scan(big), size=24, channels=1, resize=r)[0].astype(int) for r in ("lanczos", "bilinear")}
    error = {r: float(np.abs(b - small).mean()) for r, b in back.items()}
    assert error["lanczos"] < 0.7 * error["bilinear"], error  # bilinear shrinks through a blur
    same = to_model_array(Scan(small), size=24, channels=1, resize=resize)[0]
    np.testing.assert_array_equal(same, small)  # at the model's size no filter touches it


def test_an_unknown_resize_filter_is_refused():
    from core.imageio import Scan

    with pytest.raises(StudioError, match="unknown resize filter 'area'; choose one of lanczos, bilinear"):
        to_model_array(Scan(GRAY), size=16, channels=1, resize="area")


def test_malformed_values_are_not_echoed_in_errors_warnings_or_logs(tmp_path, caplog, recwarn):
    """pydicom quotes invalid values in its warnings; a hostile file can put an identifier in one."""
    path = write_dicom(tmp_path / "odd.dcm", GRAY.astype(np.uint16))
    planted = IDENTIFIERS["PatientID"]
    path.write_bytes(
        path.read_bytes().replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840." + planted.encode() + b"\x00\x00")
    )
    with caplog.at_level("DEBUG"), pytest.raises(StudioError) as e:
        read_scan(path)
    assert "cannot decode" in str(e.value)
    text = str(e.value) + caplog.text + " ".join(str(w.message) for w in recwarn)
    assert planted not in text
