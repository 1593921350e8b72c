"""Strong augmentation of the *mixed* student inputs (Hoyer/DACS): colour jitter and Gaussian blur.

The teacher sees clean images; perturbing only the student's input is what makes the consistency
target informative. Vectorised over the batch (one random draw per image) instead of a Python loop
per image, and driven by an explicit generator so runs are reproducible.

Colour jitter (strength s = 0.25, probability 0.8): brightness, contrast and saturation factors in
[1 - s, 1 + s] and a hue rotation of up to ±s radians (kornia's `adjust_hue` unit, done as a rotation
of the chroma plane in YIQ space). Gaussian blur (probability 0.5): sigma in [0.15, 1.15], separable,
reflection padding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _uniform(n: int, lo: float, hi: float, g: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def color_jitter(x: torch.Tensor, strength: float = 0.25, p: float = 0.8,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and hue jitter on RGB [B,3,H,W] in [0, 1]."""
    b = x.shape[0]
    apply = torch.rand(b, generator=generator) < p
    s = strength

    def factor() -> torch.Tensor:  # 1 (identity) for images not drawn
        f = torch.where(apply, _uniform(b, 1 - s, 1 + s, generator), torch.ones(b))
        return f.to(x).view(-1, 1, 1, 1)

    bright, contrast, sat = factor(), factor(), factor()
    hue = torch.where(apply, _uniform(b, -s, s, generator), torch.zeros(b)).to(x)

    out = (x * bright).clamp(0, 1)
    mean = _gray(out).mean(dim=(2, 3), keepdim=True)
    out = ((out - mean) * contrast + mean).clamp(0, 1)
    gray = _gray(out)
    out = ((out - gray) * sat + gray).clamp(0, 1)
    # Hue: rotate the (I, Q) chroma plane; luma Y is unchanged.
    m = _RGB2YIQ.to(x)
    yiq = torch.einsum("ij,bjhw->bihw", m, out)
    c, sn = torch.cos(hue).view(-1, 1, 1), torch.sin(hue).view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], c * i - sn * q, sn * i + c * q], 1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(m), yiq).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma_min: float = 0.15, sigma_max: float = 1.15, p: float = 0.5,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image separable Gaussian blur; images not drawn keep a delta kernel (unchanged)."""
    b, ch, h, w = x.shape
    apply = torch.rand(b, generator=generator) < p
    sigma = _uniform(b, sigma_min, sigma_max, generator)
    radius = min(max(1, math.ceil(3 * sigma_max)), min(h, w) - 1)  # reflect padding needs pad < size
    if radius < 1 or not bool(apply.any()):
        return x
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)
    delta = (t == 0).float()[None].expand(b, -1)
    k = torch.where(apply[:, None], k, delta).to(x)
    k = k.repeat_interleave(ch, 0)  # [B*C, K]
    y = x.reshape(1, b * ch, h, w)
    y = F.pad(y, (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=b * ch)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    y = F.conv2d(y, k[:, None, :, None], groups=b * ch)
    return y.reshape(b, ch, h, w)


def strong_augment(x: torch.Tensor, generator: torch.Generator | None = None, jitter_strength: float = 0.25,
                   jitter_p: float = 0.8, blur_p: float = 0.5, blur_sigma: tuple[float, float] = (0.15, 1.15)
                   ) -> torch.Tensor:
    """Colour jitter then Gaussian blur, as applied to the student's mixed images."""
    x = color_jitter(x, jitter_strength, jitter_p, generator)
    return gaussian_blur(x, blur_sigma[0], blur_sigma[1], blur_p, generator)
