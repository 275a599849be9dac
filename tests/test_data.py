"""Every data source yields the same thing: uint8 images, labels, class names, three disjoint splits."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import class_folders, compress_dicom, write_dicom, write_medmnist
from PIL import Image

from core import isolated
from core.data import DataConfig, load_dataset
from core.dataset import stratified_split
from core.errors import StudioError
from core.synthetic import CLASSES, render


def test_synthetic_is_deterministic_balanced_and_has_lesion_masks():
    a, ya, ma = render(400, size=32, seed=3)
    b, yb, mb = render(400, size=32, seed=3)
    c, _, _ = render(400, size=32, seed=4)
    assert torch.equal(a, b) and torch.equal(ya, yb) and torch.equal(ma, mb)
    assert not torch.equal(a, c)
    assert a.dtype == torch.uint8 and a.shape == (400, 1, 32, 32)
    assert torch.bincount(ya).tolist() == [100] * 4
    area = ma.flatten(1).float().mean(1)
    assert (area[ya == 0] == 0).all()  # normal scans have no lesion
    assert (area[ya != 0] > 0.005).all() and (area[ya != 0] < 0.2).all()  # small, local lesions


def test_synthetic_lesions_change_the_pixels_inside_their_masks():
    """Same seed, lesion contrast 0 vs 1: the images differ inside the lesion and hardly outside it."""
    from core.synthetic import SyntheticSpec

    flat, _, _ = render(200, size=64, seed=1, spec=SyntheticSpec(lesion_contrast=0.0))
    full, y, m = render(200, size=64, seed=1)
    diff = (full.float() - flat.float()).abs()[:, 0]
    sick = y != 0
    inside = diff[sick][m[sick]].mean()
    outside = diff[sick][~m[sick]].mean()
    assert inside > 10 and inside > 8 * outside


def test_synthetic_dataset_splits_are_sized_as_asked():
    d = load_dataset(DataConfig(image_size=24, synthetic_train=40, synthetic_val=12, synthetic_test=8))
    assert (len(d.train), len(d.val), len(d.test)) == (40, 12, 8)
    assert d.classes == list(CLASSES) and d.image_size == 24 and d.channels == 1
    assert d.train.masks is not None and d.train.masks.shape == (40, 24, 24)


def test_stratified_split_is_seeded_disjoint_and_stratified():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    tr, va, te = stratified_split(labels, val_fraction=0.2, test_fraction=0.1, seed=0)
    tr2, va2, te2 = stratified_split(labels, val_fraction=0.2, test_fraction=0.1, seed=0)
    assert torch.equal(tr, tr2) and torch.equal(va, va2) and torch.equal(te, te2)
    allidx = torch.cat([tr, va, te])
    assert len(allidx) == 100 and len(torch.unique(allidx)) == 100
    assert torch.bincount(labels[va]).tolist() == [10, 6, 4]
    assert torch.bincount(labels[te]).tolist() == [5, 3, 2]


def _png(path, value, size=20, rgb=False):
    a = np.full((size, size), value, np.uint8)
    a[2:6, 2:6] = 255 - value
    Image.fromarray(np.dstack([a, a // 2, a]) if rgb else a).save(path)


def make_mixed_folder(root, per_class=6):
    """Two classes with PNG, 16-bit TIFF and DICOM (without extension: JPEG lossless, decoded by GDCM in
    core.isolated's worker while the folder's reader threads run) mixed."""
    for c, base in (("benign", 40), ("malignant", 200)):
        d = root / c
        d.mkdir(parents=True)
        for i in range(per_class):
            kind = i % 3
            if kind == 0:
                _png(d / f"{c}{i}.png", base + i)
            elif kind == 1:
                Image.fromarray(np.full((20, 20), (base + i) * 200, np.uint16)).save(d / f"{c}{i}.tif")
            else:
                plain = write_dicom(root / "plain.dcm", np.full((20, 20), base + i, np.uint16))
                if i % 2:
                    plain.rename(d / f"{c}{i}.dcm")
                else:
                    compress_dicom(plain, d / f"{c}{i}", "JPEGLosslessProcess14_1")
                    plain.unlink()
    (root / "benign" / "README.txt").write_text("not a scan, ignored")
    (root / "benign" / ".hidden.png").write_bytes(b"junk")
    return root


def test_folder_with_mixed_formats(tmp_path):
    root = make_mixed_folder(tmp_path / "scans", per_class=10)
    d = load_dataset(
        DataConfig(dataset="folder", data_path=str(root), image_size=16, val_fraction=0.2, test_fraction=0.2)
    )
    assert d.classes == ["benign", "malignant"]
    assert len(d.train) + len(d.val) + len(d.test) == 20
    assert torch.bincount(d.val.labels).tolist() == [2, 2] and torch.bincount(d.test.labels).tolist() == [2, 2]
    assert d.train.images.dtype == torch.uint8 and d.train.images.shape[1:] == (1, 16, 16)
    assert len(isolated.workers()) <= 1  # the decoder workers it took, but one, are gone again


def test_folder_with_split_subfolders_keeps_given_splits(tmp_path):
    for split, n in (("train", 6), ("test", 2)):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                _png(tmp_path / split / c / f"{i}.png", 30 * i, rgb=True)
    d = load_dataset(DataConfig(dataset="folder", data_path=str(tmp_path), image_size=16, val_fraction=0.34))
    assert len(d.test) == 4 and len(d.val) == 4 and len(d.train) == 8
    assert d.channels == 3


def test_csv_manifest(tmp_path):
    rows = ["path,label,split"]
    for i in range(8):
        _png(tmp_path / f"x{i}.png", 20 * i)
        rows.append(f"x{i}.png,{'pos' if i % 2 else 'neg'},{'test' if i >= 6 else 'train'}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    d = load_dataset(DataConfig(dataset="folder", data_path=str(tmp_path / "m.csv"), image_size=16, val_fraction=0.34))
    assert d.classes == ["neg", "pos"] and len(d.test) == 2 and len(d.train) + len(d.val) == 6


def test_unreadable_files_are_named_not_dropped(tmp_path):
    root = make_mixed_folder(tmp_path / "scans")
    (root / "malignant" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cfg = DataConfig(dataset="folder", data_path=str(root), image_size=16)
    with pytest.raises(StudioError, match=r"broken\.png") as e:
        load_dataset(cfg)
    assert "1 of 13 files" in str(e.value)
    from dataclasses import replace

    d = load_dataset(replace(cfg, skip_bad_files=True))
    assert len(d.train) + len(d.val) + len(d.test) == 12
    assert len(d.skipped) == 1 and "broken.png" in d.skipped[0]


@pytest.mark.parametrize("size,rgb,image_size", [(28, False, 28), (28, False, 32), (64, True, 32)])
def test_medmnist_npz(tmp_path, size, rgb, image_size):
    path = write_medmnist(tmp_path / "pathmnist.npz", size=size, rgb=rgb)
    d = load_dataset(DataConfig(dataset="medmnist", data_path=str(path), image_size=image_size))
    assert (len(d.train), len(d.val), len(d.test)) == (30, 10, 10)
    assert d.image_size == image_size and d.channels == (3 if rgb else 1)
    assert len(d.classes) == 3 and d.train.labels.tolist()[:4] == [0, 1, 2, 0]
    if size == image_size:
        raw = np.load(path)["train_images"]
        assert torch.equal(d.train.images[:, 0], torch.from_numpy(raw))


def zip_of_pngs(path: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("scan.png", b"\x89PNG\r\n\x1a\n")
    return path


@pytest.mark.parametrize("check", ["load_dataset", "split_sizes"])
@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: write_medmnist(p / "chestmnist.npz", multilabel=True), "multi-label"),
        (lambda p: (np.savez(p / "x.npz", train_images=np.zeros((2, 28, 28), np.uint8)), p / "x.npz")[1], "lacks"),
        # numpy reads any other file as a pickle and says to load it unsafely if it is trusted; the message
        # says what the file should be instead
        (lambda p: (p / "bad.npz").write_bytes(b"nonsense") and p / "bad.npz", "bad.npz is not a .npz file: MedMNIST"),
        (lambda p: zip_of_pngs(p / "study.npz"), "study.npz is not a MedMNIST file: it lacks train_images"),
        (lambda p: p / "absent.npz", "no such"),
        (lambda p: write_medmnist(p / "noval.npz", n=(30, 0, 10)), r"noval.npz: the validation split is empty \("),
        (lambda p: write_medmnist(p / "notest.npz", n=(30, 10, 0)), "notest.npz: the test split is empty"),
        (lambda p: write_medmnist(p / "notrain.npz", n=(0, 10, 10)), "notrain.npz: the training split is empty"),
        (lambda p: write_medmnist(p / "one.npz", classes=1), "needs at least two classes; this data has 1"),
    ],
)
def test_medmnist_bad_files(tmp_path, make, message, check):
    """Loading (the trainer) and counting (the studio, before it makes a run folder) refuse alike."""
    from core import data

    path = make(tmp_path)
    with pytest.raises(StudioError, match=message) as e:
        getattr(data, check)(DataConfig(dataset="medmnist", data_path=str(path)))
    assert "pickle" not in str(e.value)


@pytest.mark.parametrize("check", ["load_dataset", "split_sizes"])
@pytest.mark.parametrize(
    "per_class,classes,message",
    [
        (
            3,
            "ab",
            "the validation split is empty .* takes 15% of each class's, one image from 4 on, and no class has 4",
        ),
        (3, "a", "needs at least two classes; this data has 1"),
        (0, "ab", "no scans found"),
    ],
)
def test_a_folder_too_small_to_split_is_refused_with_what_it_needs(tmp_path, per_class, classes, message, check):
    """Two classes of three images: 15% of three rounds to none, so validation and test were empty, and the
    run failed after its first epoch with "Dimension out of range"."""
    from core import data

    root = class_folders(tmp_path / "tiny", dict.fromkeys(classes, per_class))
    with pytest.raises(StudioError, match=message):
        getattr(data, check)(DataConfig(dataset="folder", data_path=str(root), image_size=16))


@pytest.mark.parametrize("check", ["load_dataset", "split_sizes"])
@pytest.mark.parametrize("fractions", [(0.6, 0.5), (1.0, 0.0), (-0.1, 0.2)])
def test_split_fractions_that_leave_no_training_image_are_refused(tmp_path, check, fractions):
    from core import data

    root = class_folders(tmp_path / "f", {"a": 10, "b": 10})
    cfg = DataConfig(dataset="folder", data_path=str(root), image_size=16, val_fraction=fractions[0])
    with pytest.raises(StudioError, match="fractions must each be in"):
        getattr(data, check)(replace(cfg, test_fraction=fractions[1]))


@pytest.mark.parametrize("per_class", [4, 5, 9])
def test_the_folder_counts_match_the_split_loading_draws(tmp_path, per_class):
    from core.data import split_sizes

    root = class_folders(tmp_path / "f", {label: per_class + i for i, label in enumerate("abc")})
    cfg = DataConfig(dataset="folder", data_path=str(root), image_size=16)
    d = load_dataset(cfg)
    sizes = {"train": len(d.train), "val": len(d.val), "test": len(d.test), "classes": len(d.classes)}
    assert split_sizes(cfg) == sizes and min(sizes.values()) >= 1


@pytest.mark.parametrize(
    "cfg,message",
    [
        (DataConfig(dataset="nope"), "unknown dataset"),
        (DataConfig(dataset="folder"), "needs its path"),
        (DataConfig(dataset="medmnist", data_path="  "), "needs its path"),
        (DataConfig(image_size=4), "image size"),
        (DataConfig(dataset="folder", data_path="/definitely/not/here"), "no such folder"),
    ],
)
def test_bad_data_configs(cfg, message):
    with pytest.raises(StudioError, match=message):
        load_dataset(cfg)


def test_the_train_tab_is_offered_what_the_data_folder_holds_of_each_kind(tmp_path):
    """MedMNIST files with their training images (from the header), image folders (class subfolders, or
    train/) and CSV manifests, two folders down at most; not a folder inside one found, nor hidden, one-class
    or other files."""
    from core.data import found_data

    root = tmp_path / "data"
    write_medmnist((root / "mnist").mkdir(parents=True) or root / "mnist" / "pneumonia.npz", n=(37, 5, 5))
    write_medmnist(root / "derma.npz", n=(12, 4, 4))
    np.savez(root / "weights.npz", a=np.zeros(3))  # an .npz of something else
    scans = ("scans/normal/a.png", "scans/mass/IM0", "scans/notes.txt")
    for name in (*scans, "split/train/a/x.png", "split/val/a/y.png", "split/test/a/z.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    for name in ("one/only/a.png", ".hidden/a/x.png", ".hidden/b/x.png", "notes/a/readme.txt", "notes/b/list.csv"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    for name in ("a/b/deep/c1/x.png", "a/b/deep/c2/x.png", "group/more/c1/x.png", "group/more/c2/x.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "manifest.csv").write_text("path,label,split\nscans/normal/a.png,normal,train\n")
    (root / "results.csv").write_text("run,accuracy\n")
    assert found_data(root, "medmnist") == [
        ("derma.npz (MedMNIST, 12 training images)", "derma.npz"),
        ("mnist/pneumonia.npz (MedMNIST, 37 training images)", "mnist/pneumonia.npz"),
    ]
    assert found_data(root, "folder") == [
        ("manifest.csv (CSV manifest)", "manifest.csv"),
        ("scans/ (image folder, 2 classes)", "scans/"),
        ("split/ (image folder with train/ val/ test/)", "split/"),
        ("group/more/ (image folder, 2 classes)", "group/more/"),
    ]
    assert found_data(root, "synthetic") == [] and found_data(tmp_path / "missing", "folder") == []


def test_a_listed_image_folder_is_one_the_folder_loader_reads_the_same_way(tmp_path):
    """The listing shares the loader's rules: split folders in any case, class folders with their scans one
    level further down, and a manifest's header as the loader reads it."""
    from core.data import DataConfig, found_data, load_dataset

    root = tmp_path / "data"
    scan = Image.fromarray(render(1, size=16, seed=1)[0][0, 0].numpy())
    four = [f"Kaggle/Train/yes/p1/a{i}.png" for i in range(4)] + [f"Kaggle/Train/no/p2/b{i}.png" for i in range(4)]
    for name in (*four, "Kaggle/Test/yes/c.png"):  # four a class: 15% of them is one for validation
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        scan.save(root / name)
    (root / "cased.csv").write_text("Path,Label\nKaggle/Test/yes/c.png,yes\n")  # the loader wants path,label
    assert found_data(root, "folder") == [("Kaggle/ (image folder with train/ test/)", "Kaggle/")]
    data = load_dataset(DataConfig(dataset="folder", data_path=str(root / "Kaggle"), image_size=16))
    assert data.classes == ["no", "yes"] and len(data.test) == 1 and len(data.val) == 2
