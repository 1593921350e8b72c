"""`seem`: semantic-edge enhancement of depth features (Li et al., SEEM) + optional semantic attention.

Depth errors concentrate at object borders, where the photometric loss is ambiguous (occlusions) and
the smooth decoder blurs. SEEM samples points on the borders of the binary semantic map, gathers
encoder, depth-decoder and semantic-decoder features there, runs a point-wise MLP and writes the result
back into the last depth features before the final conv, so the network gets an explicit, cheap
channel for "this is a border" where it matters.

Pieces (docs/method.md §4.3):
- `sample_edge_points`: Sobel on the binary mask; 40% top responses, 40% of those jittered by up to
  ±3 px, 20% uniform random; N = sde.seem_points at 640x192, scaled with the image area.
- `SemanticDecoder`: a binary semantic decoder on the shared encoder (same U-Net body as depth),
  trained by BCE against the pseudo-labels (weight sde.seg_weight; the SEEM paper uses 1).
- `PointEnhancer`: bilinear sampling (grid_sample) of encoder levels 0/1, depth pre-fuse features of
  levels 2/1/0 and semantic levels 2/1/0; k=1 convs to 128/112/112; MLP 256-256-256 -> decoder width.
- `SemanticAttention`: at decoder levels 4, 3, 2, depth and semantic features are fused by a 3x3
  conv + ELU into F_A, then out = γ·softmax(QKᵀ)V + F_A with γ = 0 at the start.

Training samples on the pseudo-label edges; evaluation (no pseudo-labels at test time) samples on the
semantic decoder's own prediction, with a fixed-seed generator so inference is deterministic.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from semdepth.models.depth_decoder import ConvBlock, DepthDecoder, Head, UNetDecoder
from semdepth.models.depth_net import DepthNet
from semdepth.models.encoder import ResnetEncoder
from semdepth.models.guidance.common import FOREGROUND, foreground_bce, foreground_target, seem_point_count

EDGE_FRACTION = 0.4  # μ: top edge responses; the same number again jittered; the rest uniform
JITTER = 3  # c: ±px of the jittered points (SEEM A.2: 87.8% of points within 3 px of the GT border)
ATTENTION_LEVELS = (4, 3, 2)
SAMPLE_LEVELS = (2, 1, 0)  # depth pre-fuse and semantic levels sampled at the points
ENCODER_LEVELS = (0, 1)
PROJ_CHANNELS = (128, 112, 112)  # encoder / depth / semantic after their k=1 convs
MLP_CHANNELS = (256, 256, 256)
EVAL_SEED = 0

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(mask: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude [B,H,W] of a binary map [B,1,H,W]; replicate padding, so the image border
    is not an edge. Non-zero exactly on the pixels adjacent to a label change (both sides)."""
    m = F.pad(mask.float(), (1, 1, 1, 1), mode="replicate")
    kx = _SOBEL_X.to(m).view(1, 1, 3, 3)
    gx = F.conv2d(m, kx)
    gy = F.conv2d(m, kx.transpose(-1, -2))
    return torch.sqrt(gx * gx + gy * gy).squeeze(1)


def split_counts(n: int, edge_fraction: float = EDGE_FRACTION) -> tuple[int, int, int]:
    """(edge, jittered, random) counts for N points: 1200/1200/600 for N = 3000."""
    n_edge = int(round(edge_fraction * n))
    n_jit = min(n_edge, n - n_edge)
    return n_edge, n_jit, n - n_edge - n_jit


def sample_edge_points(mask: torch.Tensor, n: int, jitter: int = JITTER, edge_fraction: float = EDGE_FRACTION,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Integer pixel coordinates [B, n, 2] as (x, y), all inside the image, ordered edge | jittered | random.

    Edge points are the top responses of the Sobel magnitude (ties broken at random, so a long
    straight border is covered evenly rather than from its first row on). If an image has fewer edge
    pixels than requested, the remainder are effectively random pixels (magnitude 0, random order).
    """
    B, _, H, W = mask.shape
    dev = mask.device
    n_edge, n_jit, n_rand = split_counts(n, edge_fraction)
    n_edge_eff = min(n_edge, H * W)
    mag = sobel_magnitude(mask).flatten(1)  # [B, HW]
    # Distinct Sobel magnitudes of a binary map differ by > 0.05: noise < 1e-3 only breaks ties.
    noise = torch.rand(mag.shape, generator=generator, device=dev) * 1e-3
    idx = torch.topk(mag + noise, n_edge_eff, dim=1).indices  # [B, n_edge]
    if n_edge_eff < n_edge:  # tiny images: repeat
        idx = idx.repeat(1, -(-n_edge // n_edge_eff))[:, :n_edge]
    edge = torch.stack([idx % W, idx // W], dim=-1)  # [B, n_edge, 2]
    parts = [edge]
    if n_jit:
        src = edge[:, torch.arange(n_jit, device=dev) % max(n_edge, 1)]
        off = torch.randint(-jitter, jitter + 1, (B, n_jit, 2), generator=generator, device=dev)
        jit = src + off
        jit[..., 0].clamp_(0, W - 1)
        jit[..., 1].clamp_(0, H - 1)
        parts.append(jit)
    if n_rand:
        rx = torch.randint(0, W, (B, n_rand, 1), generator=generator, device=dev)
        ry = torch.randint(0, H, (B, n_rand, 1), generator=generator, device=dev)
        parts.append(torch.cat([rx, ry], -1))
    return torch.cat(parts, 1)


def sample_features(feat: torch.Tensor, points: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear features [B,C,N] at image pixel centres `points` [B,N,2] (x, y) of a map covering the image.

    The same normalised coordinate ((u + 0.5) / W · 2 − 1, align_corners=False) addresses the same image
    location at every feature resolution.
    """
    H, W = image_size
    grid = torch.empty(points.shape, dtype=feat.dtype, device=feat.device)
    grid[..., 0] = (points[..., 0].to(feat.dtype) + 0.5) / W * 2 - 1
    grid[..., 1] = (points[..., 1].to(feat.dtype) + 0.5) / H * 2 - 1
    out = F.grid_sample(feat, grid.unsqueeze(1), mode="bilinear", padding_mode="border", align_corners=False)
    return out.squeeze(2)


def write_points(feat: torch.Tensor, points: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """`feat` [B,C,H,W] with the pixels at `points` replaced by `values` [B,C,N] (duplicates averaged).

    Out of place, so autograd sees the replacement; the averaging makes repeated points deterministic.
    """
    B, C, H, W = feat.shape
    index = (points[..., 1] * W + points[..., 0]).unsqueeze(1).expand(B, C, -1)
    flat = feat.flatten(2).scatter_reduce(2, index, values.to(feat.dtype), reduce="mean", include_self=False)
    return flat.view(B, C, H, W)


class SemanticDecoder(nn.Module):
    """Binary semantic decoder on the shared encoder: full-resolution foreground logit + level features."""

    def __init__(self, num_ch_enc: list[int]) -> None:
        super().__init__()
        self.body = UNetDecoder(num_ch_enc)
        self.head = Head(self.body.num_ch_dec[0], 1)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        levels = self.body.decode(feats)
        return self.head(levels[0]), levels


class PointEnhancer(nn.Module):
    """Point-wise MLP on [encoder | depth | semantic] features sampled at the edge points."""

    def __init__(self, c_enc: int, c_depth: int, c_sem: int, out_channels: int) -> None:
        super().__init__()
        pe, pd, ps = PROJ_CHANNELS
        self.proj_enc = nn.Conv1d(c_enc, pe, 1)
        self.proj_depth = nn.Conv1d(c_depth, pd, 1)
        self.proj_sem = nn.Conv1d(c_sem, ps, 1)
        layers: list[nn.Module] = []
        cin = pe + pd + ps
        for c in MLP_CHANNELS:
            layers += [nn.Conv1d(cin, c, 1), nn.ReLU(inplace=True)]
            cin = c
        layers.append(nn.Conv1d(cin, out_channels, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, enc: torch.Tensor, depth: torch.Tensor, sem: torch.Tensor) -> torch.Tensor:
        z = torch.cat([self.proj_enc(enc), self.proj_depth(depth), self.proj_sem(sem)], 1)
        return self.mlp(z)


class SemanticAttention(nn.Module):
    """F_A = ELU(conv3x3([depth | semantic])); out = γ·softmax(QKᵀ)V + F_A with γ starting at 0."""

    def __init__(self, c_depth: int, c_sem: int) -> None:
        super().__init__()
        self.fuse = ConvBlock(c_depth + c_sem, c_depth)
        ck = max(1, c_depth // 8)
        self.q = nn.Conv2d(c_depth, ck, 1)
        self.k = nn.Conv2d(c_depth, ck, 1)
        self.v = nn.Conv2d(c_depth, c_depth, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, depth: torch.Tensor, sem: torch.Tensor) -> torch.Tensor:
        fa = self.fuse(torch.cat([depth, sem], 1))
        B, C, H, W = fa.shape
        q = self.q(fa).flatten(2).transpose(1, 2).unsqueeze(1)  # [B, 1, HW, ck]
        k = self.k(fa).flatten(2).transpose(1, 2).unsqueeze(1)
        v = self.v(fa).flatten(2).transpose(1, 2).unsqueeze(1)  # [B, 1, HW, C]
        # softmax(QKᵀ)V without the 1/sqrt(d) factor (SAGAN-style, as SEEM); the fused kernel never
        # materialises the HW x HW matrix on GPU (level 2 at 1024x512 would need 4 GB per image).
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        out = out.squeeze(1).transpose(1, 2).reshape(B, C, H, W)
        return self.gamma * out + fa


class SeemDepthNet(DepthNet):
    """Depth network + binary semantic decoder + SEEM point enhancement (+ attention at levels 4,3,2)."""

    needs = frozenset({FOREGROUND})

    def __init__(self, encoder: ResnetEncoder, decoder: DepthDecoder, points_at_reference: int,
                 seg_weight: float, attention: bool = False) -> None:
        super().__init__(encoder, decoder)
        enc, dec = list(encoder.num_ch_enc), list(decoder.num_ch_dec)
        self.points_at_reference = int(points_at_reference)
        self.seg_weight = float(seg_weight)
        self.semantic = SemanticDecoder(enc)
        prefuse = [dec[i] + (enc[i - 1] if i > 0 else 0) for i in range(5)]
        self.enhancer = PointEnhancer(sum(enc[i] for i in ENCODER_LEVELS), sum(prefuse[i] for i in SAMPLE_LEVELS),
                                      sum(dec[i] for i in SAMPLE_LEVELS), prefuse[0])
        self.attention = nn.ModuleDict({str(i): SemanticAttention(prefuse[i], dec[i]) for i in ATTENTION_LEVELS}
                                       ) if attention else None

    def _mask_and_generator(self, sem_logits: torch.Tensor, batch: Mapping[str, Any] | None
                            ) -> tuple[torch.Tensor, torch.Generator | None]:
        if self.training:
            return foreground_target(batch, tuple(sem_logits.shape[-2:])), None
        g = torch.Generator(device=sem_logits.device)
        g.manual_seed(EVAL_SEED)
        return (sem_logits.detach() > 0).float(), g

    def forward(self, x: torch.Tensor, batch: Mapping[str, Any] | None = None) -> dict:
        feats = self.encoder(x)
        sem_logits, sem_levels = self.semantic(feats)
        H, W = x.shape[-2:]
        mask, gen = self._mask_and_generator(sem_logits, batch)
        points = sample_edge_points(mask, seem_point_count(self.points_at_reference, H, W), generator=gen)
        prefused: dict[int, torch.Tensor] = {}

        def pre_fuse(level: int, t: torch.Tensor) -> torch.Tensor:
            if self.attention is not None and str(level) in self.attention:
                t = self.attention[str(level)](t, sem_levels[level])
            if level == 0:
                enc = torch.cat([sample_features(feats[i], points, (H, W)) for i in ENCODER_LEVELS], 1)
                dep = torch.cat([sample_features(prefused[i] if i else t, points, (H, W)) for i in SAMPLE_LEVELS], 1)
                sem = torch.cat([sample_features(sem_levels[i], points, (H, W)) for i in SAMPLE_LEVELS], 1)
                t = write_points(t, points, self.enhancer(enc, dep, sem))
            prefused[level] = t
            return t

        out = self.decoder(feats, pre_fuse=pre_fuse)
        out["encoder"] = feats
        out["sem_logits"] = sem_logits
        out["seem_points"] = points
        return out

    def aux_losses(self, outputs: dict, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        logits = outputs["sem_logits"]
        target = foreground_target(batch, tuple(logits.shape[-2:]))
        return {"sem_bce": self.seg_weight * foreground_bce(logits, target)}
