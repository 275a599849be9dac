"""RGA and the batched reference pipeline, checked against independent computations."""

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from core.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RegionalGamma,
    TrainAugment,
    ViewParams,
    _contrast,
    _saturation,
    eval_transform,
    regional_gamma,
)


def ref_regional_gamma(images, gamma, boxes):
    out = images.astype(np.float64).copy()
    for b in range(images.shape[0]):
        y0, x0, y1, x1 = boxes[b]
        for y in range(images.shape[2]):
            for x in range(images.shape[3]):
                if y0 <= y < y1 and x0 <= x < x1:
                    out[b, :, y, x] = images[b, :, y, x].astype(np.float64) ** gamma[b]
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_regional_gamma_matches_pixel_loop(channels):
    g = np.random.default_rng(0)
    images = g.random((4, channels, 9, 11))
    gamma = np.array([0.5, 1.0, 2.0, 1.3])
    boxes = np.array([[0, 0, 9, 11], [2, 3, 5, 7], [4, 4, 4, 8], [7, 9, 9, 11]])  # full, inner, empty, corner
    got = regional_gamma(torch.tensor(images), gamma=torch.tensor(gamma), boxes=torch.tensor(boxes))
    np.testing.assert_allclose(got.numpy(), ref_regional_gamma(images, gamma, boxes), rtol=1e-12)


def test_regional_gamma_boxes_are_end_exclusive():
    x = torch.full((1, 1, 4, 4), 0.25)
    out = regional_gamma(x, gamma=torch.tensor([2.0]), boxes=torch.tensor([[1, 1, 3, 3]]))
    changed = (out != x)[0, 0]
    assert changed.sum() == 4 and changed[1:3, 1:3].all()


def test_random_rga_is_seeded_and_follows_the_paper_distribution():
    rga = RegionalGamma()
    p1 = rga.sample(4000, 32, 32, generator=torch.Generator().manual_seed(1))
    p2 = rga.sample(4000, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(p1.gamma, p2.gamma) and torch.equal(p1.boxes, p2.boxes)
    assert p1.gamma.min() >= 0.5 and p1.gamma.max() <= 2.0
    assert abs(float(p1.gamma.mean()) - 1.25) < 0.03  # U(0.5, 2)
    y0, x0, y1, x1 = p1.boxes.unbind(1)
    assert (y0 >= 0).all() and (x0 >= 0).all() and (y1 <= 32).all() and (x1 <= 32).all()
    assert ((y1 - y0) <= int(32 * 0.5**0.5)).all()  # side ratio sqrt(1 - lam) <= sqrt(0.5)
    # the same draw written with numpy (CutMix-style box): mean clipped height and width agree
    g = np.random.default_rng(0)
    lam = np.maximum(u := g.random(200_000), 1 - u)
    cut = np.floor(32 * np.sqrt(1 - lam)).astype(int)
    c = g.integers(0, 32, u.size)
    ref = np.clip(c + cut // 2, 0, 32) - np.clip(c - cut // 2, 0, 32)
    assert abs(float((y1 - y0).float().mean()) - ref.mean()) < 0.3
    assert abs(float((x1 - x0).float().mean()) - ref.mean()) < 0.3


def test_random_rga_applies_exactly_what_it_samples():
    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    out = RegionalGamma()(x, generator=torch.Generator().manual_seed(5))
    p = RegionalGamma().sample(8, 16, 16, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out, regional_gamma(x, gamma=p.gamma, boxes=p.boxes))


@pytest.mark.parametrize("channels", [1, 3])
def test_jitter_matches_torchvision(channels):
    x = torch.rand(5, channels, 12, 12, generator=torch.Generator().manual_seed(0))
    f = torch.tensor([0.5, 0.8, 1.0, 1.2, 1.5])
    want_c = torch.stack([TF.adjust_contrast(x[i], float(f[i])) for i in range(5)])
    torch.testing.assert_close(_contrast(x, f), want_c, atol=1e-5, rtol=1e-5)
    if channels == 3:
        want_s = torch.stack([TF.adjust_saturation(x[i], float(f[i])) for i in range(5)])
        torch.testing.assert_close(_saturation(x, f), want_s, atol=1e-5, rtol=1e-5)
    else:
        assert torch.equal(_saturation(x, f), x)


def identity_params(b, size, **kw):
    base = dict(
        crop=torch.tensor([[0.0, 0.0, size, size]] * b),
        flip=torch.zeros(b, 2, dtype=torch.bool),
        rga=None,
        contrast=torch.ones(b),
        saturation=torch.ones(b),
        saturation_first=torch.zeros(b, dtype=torch.bool),
    )
    base.update(kw)
    return ViewParams(**base)


def test_identity_view_returns_the_image():
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    out = TrainAugment(size=8).apply(x, identity_params(3, 8), normalise=False)
    torch.testing.assert_close(out, x.float() / 255, atol=1e-6, rtol=0)


def test_flips_and_crop_move_pixels_where_expected():
    x = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8) * 3
    aug = TrainAugment(size=8)
    h = aug.apply(x, identity_params(1, 8, flip=torch.tensor([[True, False]])), normalise=False)
    v = aug.apply(x, identity_params(1, 8, flip=torch.tensor([[False, True]])), normalise=False)
    torch.testing.assert_close(h, x.flip(-1).float() / 255, atol=1e-6, rtol=0)
    torch.testing.assert_close(v, x.flip(-2).float() / 255, atol=1e-6, rtol=0)
    # a 4x4 crop at (2, 2) scaled to 4x4 output is exactly that patch
    crop = TrainAugment(size=4).apply(
        x, identity_params(1, 4, crop=torch.tensor([[2.0, 2.0, 4.0, 4.0]])), normalise=False
    )
    torch.testing.assert_close(crop, x[..., 2:6, 2:6].float() / 255, atol=1e-6, rtol=0)


def test_pipeline_is_seeded_and_each_view_differs():
    x = torch.randint(0, 256, (6, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    aug = TrainAugment(size=16)
    a = aug(x, generator=torch.Generator().manual_seed(9))
    b = aug(x, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    v1, v2 = aug(x, generator=g), aug(x, generator=g)
    assert torch.equal(a, b) and torch.equal(a, v1)
    assert not torch.equal(v1, v2)
    assert a.shape == (6, 3, 16, 16) and a.dtype == torch.float32


def test_crop_parameters_follow_random_resized_crop():
    p = TrainAugment(size=32).sample(5000, 32, 32, generator=torch.Generator().manual_seed(0))
    top, left, h, w = p.crop.unbind(1)
    area = h * w / (32 * 32)
    assert (area >= 0.8 - 0.05).all() and (area <= 1.0 + 1e-6).all()
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    assert 0.45 < float(p.flip[:, 0].float().mean()) < 0.55 and 0.45 < float(p.flip[:, 1].float().mean()) < 0.55
    assert p.contrast.min() >= 0.5 and p.contrast.max() <= 1.5


def test_eval_transform_normalises_with_imagenet_statistics():
    x = torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)
    out = eval_transform(x)
    want = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert out.shape == (1, 3, 2, 2)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor(want), atol=1e-6, rtol=0)
