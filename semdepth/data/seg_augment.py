"""Segmentation training augmentation: random scale-crop, horizontal flip, colour jitter.

Why every draw comes from an explicit `torch.Generator`: the sample at global position i of a run
is then a pure function of (seed, i), whatever the number of DataLoader workers or a resume point,
so CPU runs are reproducible byte for byte. Labels are resized with nearest neighbour and padded with
255 (ignore) so that no invented class enters the loss; images are padded with 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SegAugment:
    scale_min: float = 0.75
    scale_max: float = 1.5
    color_jitter: float = 0.3  # brightness/contrast/saturation factors drawn from [1-j, 1+j]
    flip_prob: float = 0.5

    def __call__(self, image: torch.Tensor, label: torch.Tensor, crop: tuple[int, int],
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """image [3,H,W] float in [0,1], label [H,W] int64 -> augmented pair of size `crop`."""
        image, label = random_scale_crop(image, label, crop, self.scale_min, self.scale_max, gen)
        if _uniform(gen) < self.flip_prob:
            image, label = image.flip(-1), label.flip(-1)
        if self.color_jitter > 0:
            image = color_jitter(image, self.color_jitter, gen)
        return image, label


def _uniform(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def random_scale_crop(image: torch.Tensor, label: torch.Tensor, crop: tuple[int, int], scale_min: float,
                      scale_max: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize by a random factor in [scale_min, scale_max], pad if smaller than `crop`, random crop."""
    s = _uniform(gen, scale_min, scale_max)
    h, w = image.shape[-2:]
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False,
                              antialias=s < 1).clamp_(0, 1)[0]
        label = F.interpolate(label[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
    ch, cw = crop
    ph, pw = max(0, ch - nh), max(0, cw - nw)
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), value=0.0)
        label = F.pad(label, (0, pw, 0, ph), value=255)
    H, W = image.shape[-2:]
    top = int(torch.randint(0, H - ch + 1, (), generator=gen))
    left = int(torch.randint(0, W - cw + 1, (), generator=gen))
    return image[:, top:top + ch, left:left + cw], label[top:top + ch, left:left + cw]


def color_jitter(image: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation, each by a factor in [1-strength, 1+strength]."""
    b, c, s = (_uniform(gen, 1 - strength, 1 + strength) for _ in range(3))
    image = image * b
    grey = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])
    image = (image - grey.mean()) * c + grey.mean()
    grey = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
    image = (image - grey) * s + grey
    return image.clamp(0, 1)
