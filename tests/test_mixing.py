"""DepthMix, ClassMix and the student augmentation (docs/method.md §7.4, Hoyer et al. §4)."""
from __future__ import annotations

import pytest
import torch

from semdepth.mixing.augment import color_jitter, gaussian_blur, strong_augment
from semdepth.mixing.classmix import classmix, classmix_masks
from semdepth.mixing.common import derangement, make_targets, mix, targets_to_labels
from semdepth.mixing.depthmix import depthmix, depthmix_masks, normalise_disparity

C = 5


def _batch(b: int, h: int = 8, w: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, h, w, generator=g)
    labels = torch.randint(0, C, (b, h, w), generator=g)
    disp = torch.rand(b, 1, h, w, generator=g) * (1 + torch.arange(b).view(-1, 1, 1, 1))  # scales differ
    return images, labels, disp, g


@pytest.mark.parametrize("b", [2, 3, 4, 5])
def test_derangement_pairs_every_image_with_another(b):
    g = torch.Generator().manual_seed(b)
    for _ in range(20):
        perm = derangement(b, g)
        assert sorted(perm.tolist()) == list(range(b))
        assert (perm != torch.arange(b)).all()


def test_derangement_rejects_single_image():
    with pytest.raises(ValueError):
        derangement(1)


def test_depthmix_closer_pixel_wins():
    h, w = 4, 6
    images = torch.stack([torch.zeros(3, h, w), torch.ones(3, h, w)])
    disp = torch.zeros(2, 1, h, w)
    disp[0, 0, :, :3] = 1.0  # image 0 is near on the left
    disp[1, 0, :, 3:] = 1.0  # image 1 is near on the right
    perm = torch.tensor([1, 0])
    probs, valid = make_targets(torch.full((2, C, h, w), 1.0 / C))
    out, _, _, mask = depthmix(images, probs, valid, disp, perm)
    # Mixed image 0: its own (near) pixels on the left, image 1's (near) pixels on the right.
    assert (out[0, :, :, :3] == 0).all() and (out[0, :, :, 3:] == 1).all()
    # Mixed image 1 (pasted onto image 0): symmetric.
    assert (out[1, :, :, 3:] == 1).all() and (out[1, :, :, :3] == 0).all()
    assert mask.dtype == torch.bool and mask.shape == (2, 1, h, w)


def test_depthmix_margin_favours_pasted_image_on_near_ties():
    d = torch.tensor([[0.0, 1.0, 0.50, 0.50], [0.0, 1.0, 0.52, 0.56]]).view(2, 1, 1, 4)
    m = depthmix_masks(d, torch.tensor([1, 0]), margin=0.03)[:, 0, 0]
    # pixel 2: 0.50 >= 0.52 - 0.03 -> image 0 wins the near tie; pixel 3: 0.50 < 0.56 - 0.03 -> image 1.
    assert m[0].tolist() == [True, True, True, False]
    assert m[1].tolist() == [True, True, True, True]


def test_depthmix_uses_min_max_normalised_disparity():
    d = torch.tensor([[0.0, 0.5, 1.0], [0.0, 5.0, 10.0]]).view(2, 1, 1, 3)
    assert torch.allclose(normalise_disparity(d)[0], normalise_disparity(d)[1])
    m = depthmix_masks(d, torch.tensor([1, 0]))
    assert m.all()  # identical after normalisation: every pixel is a tie, the pasted image wins


@pytest.mark.parametrize("b", [2, 3, 4, 5])
def test_depthmix_labels_follow_their_pixels(b):
    images, labels, disp, g = _batch(b, seed=b)
    labels[0, :2] = 255  # some ignored ground truth in a labelled frame ...
    disp[0, :, :2] = 100.0  # ... that is the nearest thing in view, so it wins in mixed image 0
    labelled = torch.zeros(b, dtype=torch.bool)
    labelled[0] = True
    teacher = torch.softmax(torch.randn(b, C, *labels.shape[1:], generator=g), 1)
    probs, valid = make_targets(teacher, labels, labelled)
    perm = derangement(b, g)
    out, mprobs, mvalid, mask = depthmix(images, probs, valid, disp, perm)
    m = mask[:, 0]
    # every output pixel comes from image k or perm[k], according to the mask
    expect = torch.where(mask, images, images[perm])
    assert torch.equal(out, expect)
    # targets come from the same image as the pixel
    src_probs = torch.where(mask, probs, probs[perm])
    assert torch.equal(mprobs, src_probs)
    hard = targets_to_labels(mprobs, mvalid)
    own = torch.where(labelled[:, None, None], labels, teacher.argmax(1))
    src_label = torch.where(m, own, own[perm])
    assert torch.equal(hard, src_label)
    # ignore labels stay ignored, and only where an ignored pixel landed
    src_ignored = torch.where(m, ~valid, (~valid)[perm])
    assert torch.equal(hard == 255, src_ignored)
    assert (hard[0, :2] == 255).all()
    assert (hard == 255).sum() <= 2 * (labels == 255).sum()


def test_make_targets_one_hot_for_labelled_teacher_for_unlabelled():
    lab = torch.tensor([[[0, 255], [2, 1]]])
    labels = torch.cat([lab, lab])
    teacher = torch.full((2, 3, 2, 2), 1 / 3)
    probs, valid = make_targets(teacher, labels, torch.tensor([True, False]))
    assert probs[0, :, 0, 0].tolist() == [1, 0, 0] and probs[0, :, 1, 0].tolist() == [0, 0, 1]
    assert probs[0, :, 0, 1].sum() == 0 and not valid[0, 0, 1]
    assert torch.equal(probs[1], teacher[1]) and valid[1].all()


def test_mix_blends_float_and_selects_integer_maps():
    mask = torch.tensor([True, False]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    perm = torch.tensor([1, 0])
    lab = torch.stack([torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.long)])
    assert mix(mask, perm, lab)[1].eq(0).all() and mix(mask, perm, lab)[0].eq(0).all()


@pytest.mark.parametrize("n_classes,expect", [(1, 1), (4, 2), (5, 3), (6, 3)])
def test_classmix_picks_half_the_classes(n_classes, expect):
    g = torch.Generator().manual_seed(n_classes)
    h, w = 6, 10
    lab = torch.arange(h * w).view(h, w) % n_classes
    lab[0, 0] = 255  # ignore is never a class to paste
    labels = torch.stack([lab, lab.flip(-1)])
    masks, chosen = classmix_masks(labels, g)
    for k in range(2):
        assert len(chosen[k]) == expect and 255 not in chosen[k].tolist()
        assert len(set(chosen[k].tolist())) == expect
        assert torch.equal(masks[k, 0], torch.isin(labels[k], chosen[k]))


@pytest.mark.parametrize("b", [2, 5])
def test_classmix_mixes_images_and_targets_consistently(b):
    images, labels, _, g = _batch(b, seed=10 + b)
    probs, valid = make_targets(torch.nn.functional.one_hot(labels, C).permute(0, 3, 1, 2).float())
    perm = derangement(b, g)
    out, mprobs, _, mask = classmix(images, probs, valid, labels, perm, g)
    assert torch.equal(out, torch.where(mask, images, images[perm]))
    assert torch.equal(mprobs.argmax(1), torch.where(mask[:, 0], labels, labels[perm]))


def test_augment_is_identity_when_never_applied_and_reproducible():
    x = torch.rand(3, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(color_jitter(x, p=0.0), x, atol=1e-5)
    assert torch.equal(gaussian_blur(x, p=0.0), x)
    a = strong_augment(x, torch.Generator().manual_seed(3))
    b = strong_augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a, x, atol=1e-3)
    assert a.min() >= 0 and a.max() <= 1


def test_blur_keeps_constant_images_and_smooths_noise():
    flat = torch.full((2, 3, 12, 12), 0.4)
    assert torch.allclose(gaussian_blur(flat, p=1.0), flat, atol=1e-6)
    noise = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    blurred = gaussian_blur(noise, sigma_min=1.0, sigma_max=1.15, p=1.0)
    assert blurred.std() < 0.6 * noise.std()
    assert abs(float(blurred.mean() - noise.mean())) < 0.02
