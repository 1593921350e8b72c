"""Semantic guidance for the self-supervised depth network (`sde.guidance`, METHOD.md §3).

`semdepth.models.sde.build_depth_net` delegates every option but "none" to `build_guided_depth_net`,
which returns a `DepthNet` subclass: `forward(x, batch)` may read `batch["foreground"]` (the names
are in `.needs`), and `aux_losses(outputs, batch)` returns extra, already weighted loss terms.

| option | module | inference cost | extra inputs |
|---|---|---|---|
| seg_branch | `seg_branch.SegBranchDepthNet`: BCE head on the decoder | none (head dropped on save) | foreground |
| pac | `pac.PacDepthNet`: PAC decoder guided by the frozen DeepLab | DeepLab + PAC | pseudolabel.pt |
| seem | `seem.SeemDepthNet`: semantic decoder, edge-point MLP, attention | semantic decoder + MLP | foreground |
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from semdepth import SemdepthError
from semdepth.models.depth_decoder import DepthDecoder
from semdepth.models.encoder import ResnetEncoder
from semdepth.models.guidance.common import FOREGROUND, cfg_get

GUIDANCE_OPTIONS = ("none", "seg_branch", "pac", "seem")
__all__ = ["FOREGROUND", "GUIDANCE_OPTIONS", "build_guided_depth_net"]


def build_guided_depth_net(cfg: Any, encoder: ResnetEncoder, *, training: bool = False,
                           pseudolabel_model: str | Path | None = None, pac_impl: str = "shift"):
    """The guided depth network for `cfg.guidance` (an SdeConfig or its dict).

    training: build the training-time network (seg_branch then carries its BCE head; without it the
        result is the plain inference network, which is what `load_sde` rebuilds).
    pseudolabel_model: data/models/pseudolabel.pt, required for a *new* pac network; a pac network
        built without it gets its DeepLab from the SDE checkpoint it is loaded from.
    pac_impl: PAC implementation, "shift" (default, faster, less memory) or "unfold" (reference).
    """
    from semdepth.models.sde import DepthNet

    guidance = cfg_get(cfg, "guidance")
    decoder = DepthDecoder(encoder.num_ch_enc)
    if guidance == "none":
        return DepthNet(encoder, decoder)
    if guidance == "seg_branch":
        if not training:
            return DepthNet(encoder, decoder)
        from semdepth.models.guidance.seg_branch import SegBranchDepthNet

        return SegBranchDepthNet(encoder, decoder, cfg_get(cfg, "seg_weight"))
    if guidance == "pac":
        from semdepth.models.guidance.pac import PacDepthNet, SemanticGuide, load_pseudolabel_deeplab

        if pseudolabel_model is not None:
            guide = SemanticGuide(deeplab=load_pseudolabel_deeplab(pseudolabel_model))
        elif training:
            raise SemdepthError("sde.guidance pac: training needs the pseudo-label model (data/models/pseudolabel.pt)")
        else:
            guide = SemanticGuide()
        return PacDepthNet(encoder, decoder, guide, impl=pac_impl)
    if guidance == "seem":
        from semdepth.models.guidance.seem import SeemDepthNet

        return SeemDepthNet(encoder, decoder, cfg_get(cfg, "seem_points"), cfg_get(cfg, "seg_weight"),
                            bool(cfg_get(cfg, "seem_attention")))
    raise SemdepthError(f"sde.guidance: {guidance!r} is not one of {', '.join(GUIDANCE_OPTIONS)}")
