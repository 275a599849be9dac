"""Architectures, safetensors checkpoints, and refusal of pickles."""

import json
import pickle

import pytest
import torch
import torchvision

from core.errors import StudioError
from core.model import ARCHS, ModelSpec, build_model, cam_layer, load_model, load_pretrained, save_model

SPEC = ModelSpec(classes=["a", "b", "c"], image_size=32, channels=1)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_gives_logits(arch):
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch=arch, classes=["a", "b", "c"], image_size=32)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    assert any(isinstance(m, torch.nn.Conv2d) for m in cam_layer(model).modules())


def test_resnet18_has_the_paper_stem_and_projector():
    small = build_model(SPEC)
    assert small.backbone.conv1.kernel_size == (3, 3) and small.backbone.conv1.stride == (1, 1)
    assert isinstance(small.backbone.maxpool, torch.nn.Identity)
    assert small.backbone.fc.out_features == 128
    kinds = [type(m) for m in small.projector]
    assert kinds == [torch.nn.Linear, torch.nn.BatchNorm1d, torch.nn.ReLU, torch.nn.Linear]
    big = build_model(ModelSpec(classes=["a", "b"], image_size=224))
    assert big.backbone.conv1.kernel_size == (7, 7) and not isinstance(big.backbone.maxpool, torch.nn.Identity)


def test_checkpoint_roundtrip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    model = build_model(SPEC).eval().to(memory_format=torch.channels_last)  # as training holds it
    save_model(model, SPEC, tmp_path / "model.safetensors", extra={"method": "tss-kd"})
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["classes"] == ["a", "b", "c"] and meta["method"] == "tss-kd" and meta["in_channels"] == 3
    x = torch.randn(3, 3, 32, 32)
    for target in (tmp_path, tmp_path / "model.safetensors", tmp_path / "model.json"):
        loaded, spec, _ = load_model(target)
        assert spec.classes == SPEC.classes
        # loaded channels-last, as trained: the faster convolutions on oneDNN CPUs and GPUs
        assert loaded.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    contiguous = build_model(SPEC).eval()
    contiguous.load_state_dict(model.state_dict())
    torch.testing.assert_close(loaded(x), contiguous(x), rtol=1e-5, atol=1e-5)  # the layout changes round-off only


@pytest.mark.parametrize(
    ("saved", "resize"),
    [
        ({"resize": "bilinear"}, "bilinear"),  # as its JSON says
        ({"resize": "lanczos"}, "lanczos"),
        ({"config": {"data": {"dataset": "folder"}}}, "bilinear"),  # saved before it said: resized with bilinear
        ({"config": {"data": {"dataset": "medmnist"}}}, "bilinear"),
        ({}, "bilinear"),
        ({"config": {"data": {"dataset": "synthetic"}}}, "lanczos"),  # demo data are never resized: the default
    ],
)
def test_a_model_resizes_scans_as_its_json_says_or_as_it_was_trained_before_it_said(tmp_path, saved, resize):
    save_model(build_model(SPEC), SPEC, tmp_path / "model.safetensors")
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["resize"] == SPEC.resize == "lanczos"  # a model saved now says it
    del meta["resize"]
    (tmp_path / "model.json").write_text(json.dumps({**meta, **saved}))
    assert load_model(tmp_path)[1].resize == resize


def test_a_model_json_naming_an_unknown_resize_filter_is_refused(tmp_path):
    save_model(build_model(SPEC), SPEC, tmp_path / "model.safetensors")
    meta = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**meta, "resize": "cubic-ish"}))
    with pytest.raises(StudioError, match="unknown resize filter 'cubic-ish'"):
        load_model(tmp_path)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".pkl", ".ckpt"])
def test_pickled_checkpoints_are_refused(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(StudioError, match="pickled checkpoints are refused"):
        load_model(path)


def test_pickle_renamed_to_safetensors_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps({"x": 1}))
    save_json = {"arch": "resnet18", "classes": ["a", "b"], "image_size": 32, "channels": 1}
    (tmp_path / "model.json").write_text(json.dumps(save_json))
    with pytest.raises(StudioError, match="damaged"):
        load_model(tmp_path)


def test_weights_that_do_not_match_their_json_are_refused(tmp_path):
    save_model(build_model(SPEC), SPEC, tmp_path / "model.safetensors")
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["classes"] = ["a", "b"]  # two classes, weights for three
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(StudioError, match="do not match"):
        load_model(tmp_path)


def test_missing_model_files_are_explained(tmp_path):
    with pytest.raises(StudioError, match="no such model"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(StudioError, match="description"):
        load_model(tmp_path)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_pretrained_torchvision_file_is_loaded_except_mismatched_layers(tmp_path, fmt):
    torch.manual_seed(2)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / f"resnet18.{fmt}"
    if fmt == "pth":
        torch.save(reference.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    model = build_model(SPEC)  # 32 px: 3x3 stem, so conv1 cannot be copied; fc has 128 outputs, not 1000
    skipped = load_pretrained(model, str(path))
    assert "backbone.conv1.weight" in skipped and "backbone.fc.weight" in skipped
    assert torch.equal(model.backbone.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)


def test_pretrained_file_must_be_safe_and_fit(tmp_path):
    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps(print))  # unpickling would call an arbitrary function
    with pytest.raises(StudioError, match="safely"):
        load_pretrained(build_model(SPEC), str(bad))


def test_a_run_can_start_from_another_runs_weights(tmp_path):
    torch.manual_seed(3)
    source = build_model(SPEC)
    save_model(source, SPEC, tmp_path / "model.safetensors")
    same = build_model(SPEC, pretrained=str(tmp_path))
    for k, v in source.state_dict().items():
        assert torch.equal(same.state_dict()[k], v), k
    other = build_model(ModelSpec(classes=["x", "y"], image_size=32, channels=1), pretrained=str(tmp_path))
    assert torch.equal(other.backbone.layer4[1].conv2.weight, source.backbone.layer4[1].conv2.weight)
    assert other.projector[3].out_features == 2  # the head for two classes stays fresh


def test_half_precision_export_predicts_like_the_original(tmp_path):
    from core.export import main as export_main

    torch.manual_seed(4)
    model = build_model(SPEC).eval()
    (tmp_path / "run").mkdir()
    save_model(model, SPEC, tmp_path / "run" / "model.safetensors", extra={"method": "tss-kd", "metrics": {"a": 1}})
    assert export_main(["--model", str(tmp_path / "run"), "--out", str(tmp_path / "demo.safetensors"), "--half"]) == 0
    small = (tmp_path / "demo.safetensors").stat().st_size
    assert small < 0.55 * (tmp_path / "run" / "model.safetensors").stat().st_size
    loaded, spec, meta = load_model(tmp_path / "demo.safetensors")
    assert meta["method"] == "tss-kd" and meta["weights_dtype"] == "float16" and spec.classes == SPEC.classes
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), atol=2e-2, rtol=2e-2)
    assert next(loaded.parameters()).dtype == torch.float32
