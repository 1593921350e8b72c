"""The student of Hoyer's selection: a smaller depth network that regresses the teacher's disparity.

Its error on a frame (uncertainty.py) measures how much that frame differs from what the frames
selected so far already teach, without any semantic labels. Hoyer used ResNet-50 with a BN decoder
against a ResNet-101 teacher; here the student is a ResNet encoder (`select.student_layers`) with the
project's U-Net decoder at half the SDE decoder's widths and a single full-resolution sigmoid head.
It is retrained from scratch in each round (weights from the round's seed) so that its error reflects
only the current selected set.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from semdepth.models.depth_decoder import Head, UNetDecoder
from semdepth.models.encoder import ResnetEncoder
from semdepth.progress import bar
from semdepth.selection.features import to_float
from semdepth.selection.uncertainty import hood_start_row
from semdepth.training.guards import check_finite

STUDENT_DECODER_CHANNELS = (8, 16, 32, 64, 128)
POLY_POWER = 0.9


class StudentNet(nn.Module):
    """ResNet encoder + light U-Net decoder -> disparity [B, 1, H, W] in (0, 1)."""

    def __init__(self, num_layers: int = 18) -> None:
        super().__init__()
        self.encoder = ResnetEncoder(num_layers)
        self.decoder = UNetDecoder(self.encoder.num_ch_enc, STUDENT_DECODER_CHANNELS)
        self.head = Head(STUDENT_DECODER_CHANNELS[0], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.decoder.decode(self.encoder(x))[0]))


def berhu(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
          ratio: float = 0.2) -> torch.Tensor:
    """Reverse Huber loss (Laina et al. 2016): |e| where |e| <= c, (e² + c²) / (2c) beyond.

    c = ratio · max |e| over the valid pixels of the whole batch, treated as a constant (no gradient
    through the max). L1 near the target keeps small residuals pulling; L2 in the tail weights the
    large errors at depth edges more. Returns the mean over valid pixels (0 if none or c = 0).
    """
    err = (pred - target).abs()
    if mask is not None:
        err = err[mask.expand_as(err)]
    if err.numel() == 0:
        return pred.sum() * 0.0
    c = ratio * err.detach().max()
    if c <= 0:
        return err.mean()
    return torch.where(err <= c, err, (err * err + c * c) / (2 * c)).mean()


def train_student(images_u8: torch.Tensor, targets: torch.Tensor, steps: int, *, num_layers: int,
                  batch_size: int, lr: float, seed: int, hood_fraction: float,
                  device: torch.device | str, description: str = "select: student") -> StudentNet:
    """Train a fresh student on `images_u8` [M, 3, H, W] uint8 and teacher disparity `targets`
    [M, 1, H, W] for `steps` Adam steps with a poly schedule; batches and flips drawn from `seed`.
    """
    torch.manual_seed(seed)  # initial weights depend on the round's seed only
    gen = torch.Generator().manual_seed(seed)
    model = StudentNet(num_layers).to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.0, 1.0 - t / steps) ** POLY_POWER)
    m = images_u8.shape[0]
    bs = min(batch_size, m)
    h = images_u8.shape[-2]
    mask = torch.ones(1, 1, h, images_u8.shape[-1], dtype=torch.bool, device=device)
    mask[..., hood_start_row(h, hood_fraction):, :] = False
    perm = torch.randperm(m, generator=gen)
    pos = 0
    with bar(description, steps) as b:
        for step in range(steps):
            if pos + bs > m:  # new epoch: reshuffle, never a short batch
                perm, pos = torch.randperm(m, generator=gen), 0
            idx = perm[pos:pos + bs]
            pos += bs
            x = to_float(images_u8[idx], device)
            y = targets[idx].to(device).float()
            flip = torch.rand(bs, generator=gen) < 0.5
            if flip.any():
                f = flip.to(device)
                x = torch.where(f.view(-1, 1, 1, 1), x.flip(-1), x)
                y = torch.where(f.view(-1, 1, 1, 1), y.flip(-1), y)
            loss = berhu(model(x), y, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            b.update(loss=check_finite(loss, step, "select student"))
    model.eval()
    return model
