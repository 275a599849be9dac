"""Scans given as a ZIP archive: a study exported from a PACS or a viewer, or a folder zipped to upload it.

`expand` turns the files a user gave (scans, folders for the command line, ZIP archives) into `Item`s, one
per scan to answer. An archive's scans are copied out, one at a time and never more than their declared
size, into a folder the caller owns and removes; their names come from the archive and are never used as
paths. What is not a scan is left out as in a folder (hidden files, macOS `__MACOSX` forks, notes,
DICOMDIR indexes, a CD's viewer software: `core.folder.may_be_scan`). An archive that cannot be read whole
(damaged, password-protected, too large, with nothing to answer) is one item with one message, and
nothing of it is left on disk.

An answer names an archive's scan by the archive, its place among the archive's scans and its file name
(``study.zip #3: IM000002``), not by the folders above it: an export may name those after the patient.
"""

from __future__ import annotations

import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.errors import StudioError
from core.folder import may_be_scan

# What one archive may expand to: more scans than Diagnose shows at once, and less than fills a disk.
MAX_ARCHIVE_SCANS = 2000
MAX_ARCHIVE_BYTES = 4 * 2**30
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a ZIP's first local header, or the end record of an empty one
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Item:
    """One scan to answer: `label` names it in the answer; `path` is the file to read, or None when `error`
    says why there is nothing to read."""

    label: str
    path: Path | None
    error: str | None = None


def is_archive(path: Path) -> bool:
    """True for a ZIP archive, told by its first bytes (a ZIP never starts like a DICOM, PNG or JPEG file)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) in ZIP_MAGIC
    except OSError:
        return False


def _parts(member: str) -> tuple[str, ...]:
    """A member's path as parts; archives made on Windows may separate them with backslashes."""
    return PurePosixPath(member.replace("\\", "/")).parts


def _copy(z: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path) -> None:
    """Copy one member out, refusing one that holds more than it declares (a forged header)."""
    left = info.file_size
    with z.open(info) as src, open(out, "wb") as dst:
        while chunk := src.read(min(_CHUNK, left + 1)):
            left -= len(chunk)
            if left < 0:
                raise zipfile.BadZipFile("it holds more than its header says")
            dst.write(chunk)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def unpack(
    path: Path,
    dest: Path,
    *,
    label: str | None = None,
    max_scans: int = MAX_ARCHIVE_SCANS,
    max_bytes: int = MAX_ARCHIVE_BYTES,
) -> list[Item]:
    """Copy the scans of the ZIP archive `path` into the new folder `dest`; an `Item` for each, in the order of
    their paths in the archive. Raises `StudioError` naming the archive, with `dest` removed, when the archive
    cannot be read whole."""
    label = label or path.name
    name = path.name
    made = False  # only a folder made here is removed on failure
    try:
        with zipfile.ZipFile(path) as z:
            infos = sorted(
                (i for i in z.infolist() if not i.is_dir() and may_be_scan(_parts(i.filename))),
                key=lambda i: _parts(i.filename),
            )
            if not infos:
                raise StudioError(f"{name}: an archive with no scans in it.")
            if any(i.flag_bits & 0x1 for i in infos):
                raise StudioError(f"{name}: the archive is password-protected; unzip it and give its files.")
            if len(infos) > max_scans:
                raise StudioError(
                    f"{name}: the archive holds {len(infos):,} scan files; at most {max_scans:,} are read from one "
                    "archive. Split it, or give its folder to the command line (python -m core.predict)."
                )
            total = sum(i.file_size for i in infos)
            if total > max_bytes:
                raise StudioError(
                    f"{name}: the archive unpacks to {_mb(total)}; at most {_mb(max_bytes)} are unpacked from one "
                    "archive."
                )
            dest.mkdir(parents=True)
            made = True
            items = []
            for k, info in enumerate(infos, 1):
                out = dest / str(k) / _parts(info.filename)[-1]  # its own folder: names may repeat across series
                out.parent.mkdir()
                try:
                    _copy(z, info, out)
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError, RuntimeError):
                    # zipfile's own message would give the member's whole path, which may name the patient
                    raise StudioError(
                        f"{name}: scan #{k} ({out.name}) is damaged in the archive, so none of it is read."
                    ) from None
                items.append(Item(f"{label} #{k}: {out.name}", out))
            return items
    except StudioError:
        if made:
            shutil.rmtree(dest, True)
        raise
    except FileExistsError:
        raise  # the caller's mistake (dest must be new), not the archive's: that folder is left as it is
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, ValueError) as e:
        if made:
            shutil.rmtree(dest, True)
        raise StudioError(f"{name}: cannot read it as a ZIP archive ({e}).") from None


def expand(names: list[str | Path], dest: Path, *, labels: list[str] | None = None, **limits) -> list[Item]:
    """An `Item` for each file named, each ZIP archive replaced by its scans (unpacked under `dest`, which the
    caller removes). `labels` name the files in answers (default: their names); an archive that cannot be read
    is one item carrying its message."""
    items: list[Item] = []
    for i, name in enumerate(names):
        path = Path(name)
        label = labels[i] if labels else path.name
        if path.is_file() and is_archive(path):
            try:
                items += unpack(path, dest / str(i), label=label, **limits)
            except StudioError as e:
                items.append(Item(label, None, str(e)))
        else:
            items.append(Item(label, path))
    return items


def answer(items: list[Item], answer_files) -> list[dict]:
    """`answer_files(paths)` for the items with a file, in order, and `{"error": message}` for the others."""
    answers = iter(answer_files([i.path for i in items if i.path is not None]))
    return [{"error": i.error} if i.path is None else next(answers) for i in items]
