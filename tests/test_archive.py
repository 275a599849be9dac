"""ZIP archives of scans (a study exported from a PACS): what is unpacked, how its scans are named, and every
archive that cannot be read refused whole with nothing left on disk."""

import struct
import zipfile
from pathlib import Path

import pytest
from helpers import write_dicom
from PIL import Image

from core.archive import Item, answer, expand, is_archive, unpack
from core.errors import StudioError
from core.folder import may_be_scan, scan_files
from core.imageio import read_scan
from core.synthetic import render

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


def png_bytes(tmp_path: Path, seed: int = 0) -> bytes:
    images, _, _ = render(1, size=32, seed=seed)
    path = tmp_path / f"scan-{seed}.png"
    Image.fromarray(images[0, 0].numpy()).save(path)
    return path.read_bytes()


def make_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def pacs_export(tmp_path: Path) -> Path:
    """A study as a PACS or viewer exports it: folders named after the patient, one DICOM file per image with the
    same name in two series, a DICOMDIR index, notes, a CD's viewer, and a Mac's forks."""
    dicom = write_dicom(tmp_path / "IM000000", (render(1, size=32, seed=5)[0][0, 0].numpy() * 16).astype("uint16"))
    return make_zip(
        tmp_path / "study.zip",
        {
            "DOE^JOHN_4711/ST000000/SE000001/IM000000": dicom.read_bytes(),
            "DOE^JOHN_4711/ST000000/SE000000/IM000000": dicom.read_bytes(),
            "DOE^JOHN_4711/ST000000/SE000000/scan.png": png_bytes(tmp_path),
            "DICOMDIR": b"DICM index without pixels",
            "README.TXT": b"Study exported by a viewer",
            "VIEWER/viewer.exe": b"MZ...",
            "__MACOSX/DOE^JOHN_4711/._scan.png": b"\x00\x05\x16\x07",
            "DOE^JOHN_4711/.DS_Store": b"\x00\x00\x00\x01Bud1",
        },
    )


def test_a_pacs_export_unpacks_to_its_scans_named_without_the_folders_above_them(tmp_path):
    items = unpack(pacs_export(tmp_path), tmp_path / "out")
    assert [i.label for i in items] == ["study.zip #1: IM000000", "study.zip #2: scan.png", "study.zip #3: IM000000"]
    assert all(i.error is None and i.path.is_file() for i in items)
    assert len({i.path for i in items}) == 3  # the two IM000000 of two series do not overwrite each other
    assert all("DOE" not in str(i.path) for i in items)  # folder names from the archive are never paths here
    assert [read_scan(i.path).info["format"] for i in items] == ["DICOM", "PNG", "DICOM"]
    assert (tmp_path / "out" / "2" / "scan.png").read_bytes() == png_bytes(tmp_path)


def test_members_are_ordered_by_their_path_and_backslash_names_from_windows_are_split(tmp_path):
    scan = png_bytes(tmp_path)
    archive = make_zip(tmp_path / "w.zip", {"b\\2.png": scan, "a\\9.png": scan, "b\\10.png": scan})
    assert [i.label for i in unpack(archive, tmp_path / "out")] == [
        "w.zip #1: 9.png",
        "w.zip #2: 10.png",
        "w.zip #3: 2.png",
    ]


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_every_compression_zip_writes_unpacks_to_the_same_bytes(tmp_path, compression):
    scan = png_bytes(tmp_path)
    items = unpack(make_zip(tmp_path / "c.zip", {"x/scan.png": scan}, compression), tmp_path / "out")
    assert [i.path.read_bytes() for i in items] == [scan]


def _flag_encrypted(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central headers' flag bits
        at = data.index(signature)
        data[at + offset] |= 0x1
    path.write_bytes(bytes(data))


def _declare_smaller(path: Path) -> None:
    """Make the headers say the member is smaller than it is (its CRC then no longer matches either)."""
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size
        at = data.index(signature) + offset
        data[at : at + 4] = struct.pack("<I", 100)
    path.write_bytes(bytes(data))


def _damage_data(path: Path) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x03\x04") + 30 + len("DOE^JOHN/scan.png") + 200
    data[at : at + 64] = bytes(64)
    path.write_bytes(bytes(data))


BAD = {
    "empty archive": (lambda p: make_zip(p, {}), "an archive with no scans in it"),
    "only notes and indexes": (lambda p: make_zip(p, {"README.txt": b"x", "DICOMDIR": b"x"}), "no scans in it"),
    "password-protected": (lambda p: _flag_encrypted(make_zip(p, {"scan.png": b"x" * 500})), "password-protected"),
    "truncated": (
        lambda p: p.write_bytes(make_zip(p, {"scan.png": b"x" * 5000}, zipfile.ZIP_STORED).read_bytes()[:3000]),
        "cannot read it",
    ),
    "damaged data": (
        lambda p: _damage_data(make_zip(p, {"DOE^JOHN/scan.png": bytes(range(256)) * 40}, zipfile.ZIP_STORED)),
        r"scan #1 \(scan.png\) is damaged in the archive",
    ),
    "size forged smaller": (
        lambda p: _declare_smaller(make_zip(p, {"DOE^JOHN/scan.png": b"y" * 5000}, zipfile.ZIP_STORED)),
        r"scan #1 \(scan.png\) is damaged",
    ),
    "too many scans": (lambda p: make_zip(p, {f"{i}.png": b"x" for i in range(4)}), "at most 3 are read"),
    "unpacks too large (a bomb)": (
        lambda p: make_zip(p, {"bomb.png": bytes(2**21)}),
        "unpacks to 2 MB; at most 1 MB are",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_an_archive_that_cannot_be_read_whole_is_refused_naming_it_and_leaves_nothing(tmp_path, case):
    build, message = BAD[case]
    path = tmp_path / "bad.zip"
    build(path)
    dest = tmp_path / "out"
    with pytest.raises(StudioError, match=message) as e:
        unpack(path, dest, max_scans=3, max_bytes=2**20)
    assert str(e.value).startswith("bad.zip: ") and "DOE" not in str(e.value) and not dest.exists()
    [item] = expand([path], tmp_path / "out2", max_scans=3, max_bytes=2**20)
    assert item == Item("bad.zip", None, str(e.value)) and not any((tmp_path / "out2").rglob("*.png"))


def test_a_folder_that_is_already_there_is_never_unpacked_into_nor_removed(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("the caller's")
    with pytest.raises(FileExistsError):
        unpack(make_zip(tmp_path / "a.zip", {"a.png": png_bytes(tmp_path)}), dest)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]


def test_files_that_are_not_archives_pass_through_under_their_names_or_the_labels_given(tmp_path):
    scan = tmp_path / "scan.png"
    scan.write_bytes(png_bytes(tmp_path))
    dicom = write_dicom(tmp_path / "IM0001", (render(1, size=16, seed=1)[0][0, 0].numpy()).astype("uint16"))
    archive = make_zip(tmp_path / "two.zip", {"a.png": scan.read_bytes(), "b.png": scan.read_bytes()})
    missing = tmp_path / "missing.png"
    assert not is_archive(scan) and not is_archive(dicom) and is_archive(archive) and not is_archive(missing)
    items = expand([scan, archive, dicom, missing], tmp_path / "out")
    assert [(i.label, i.error) for i in items] == [
        ("scan.png", None),
        ("two.zip #1: a.png", None),
        ("two.zip #2: b.png", None),
        ("IM0001", None),
        ("missing.png", None),  # left for the reader to name as missing, as any file is
    ]
    assert items[0].path == scan and items[3].path == dicom
    labelled = expand([str(archive)], tmp_path / "out3", labels=["in/two.zip"])
    assert [i.label for i in labelled] == ["in/two.zip #1: a.png", "in/two.zip #2: b.png"]


def test_a_file_renamed_to_zip_is_not_an_archive_and_a_zip_renamed_to_png_is(tmp_path):
    fake = tmp_path / "scan.zip"
    fake.write_bytes(png_bytes(tmp_path))
    real = make_zip(tmp_path / "real.png", {"a.png": png_bytes(tmp_path)})
    assert not is_archive(fake) and is_archive(real)
    assert [i.label for i in expand([fake, real], tmp_path / "out")] == ["scan.zip", "real.png #1: a.png"]


def test_answers_come_back_in_the_items_order_with_the_archives_messages_in_place(tmp_path):
    items = [Item("a", Path("a")), Item("bad.zip", None, "bad.zip: damaged"), Item("b", Path("b"))]
    asked = []

    def answer_files(paths):
        asked.append(paths)
        return [{"answer": str(p)} for p in paths]

    assert answer(items, answer_files) == [{"answer": "a"}, {"error": "bad.zip: damaged"}, {"answer": "b"}]
    assert asked == [[Path("a"), Path("b")]]  # one call: the readable files go to the model together


@pytest.mark.parametrize(
    "parts, scan",
    [
        (("IM000000",), True),
        (("SE1", "IM000000.dcm"), True),
        (("a", "scan.PNG"), True),
        (("DICOMDIR",), False),
        (("study", "dicomdir"), False),
        (("__MACOSX", "x", "._scan.png"), False),
        ((".git", "scan.png"), False),
        (("VIEWER", "viewer.EXE"), False),
        (("notes.txt",), False),
        ((), False),
    ],
)
def test_what_may_be_a_scan_in_a_folder_or_an_archive(parts, scan):
    assert may_be_scan(parts) is scan


def test_a_folder_leaves_out_a_dicomdir_and_a_viewer_as_an_archive_does(tmp_path):
    for name in ("a/IM0", "DICOMDIR", "viewer/run.exe", "a/.DS_Store", "b/scan.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in scan_files(tmp_path)] == ["a/IM0", "b/scan.png"]
