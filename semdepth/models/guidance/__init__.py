"""Semantic guidance for the self-supervised depth network (`sde.guidance`, docs/method.md §4).

Importing this package registers the guided networks in `semdepth.models.registry`, which the SDE
factory (`build_depth_net` in sde.py) builds from. Each is a `DepthNet` subclass: `forward(x, batch)`
may read `batch["foreground"]` (the names are in `.needs`), and `aux_losses(outputs, batch)` returns
extra, already weighted loss terms. The option modules are imported only when their network is built.

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
from semdepth.models.depth_net import DepthNet
from semdepth.models.encoder import ResnetEncoder
from semdepth.models.guidance.common import FOREGROUND
from semdepth.models.registry import cfg_get, register

__all__ = ["FOREGROUND"]


@register("seg_branch")
def seg_branch(cfg: Any, encoder: ResnetEncoder, decoder: DepthDecoder, *, training: bool = False,
               **options: Any) -> DepthNet:
    """With training, the network carries its BCE head; without it, it is the plain inference network,
    which is what `load_sde` rebuilds (the head is not saved)."""
    if not training:
        return DepthNet(encoder, decoder)
    from semdepth.models.guidance.seg_branch import SegBranchDepthNet

    return SegBranchDepthNet(encoder, decoder, cfg_get(cfg, "seg_weight"))


@register("pac")
def pac(cfg: Any, encoder: ResnetEncoder, decoder: DepthDecoder, *, training: bool = False,
        pseudolabel_model: str | Path | None = None, pac_impl: str = "shift", **options: Any) -> DepthNet:
    """pseudolabel_model (data/models/pseudolabel.pt) is required for a *new* network; one built without
    it gets its DeepLab from the SDE checkpoint it is loaded from. pac_impl: "shift" (default, faster,
    less memory) or "unfold" (reference)."""
    from semdepth.models.guidance.pac import PacDepthNet, SemanticGuide, load_pseudolabel_deeplab

    if pseudolabel_model is not None:
        guide = SemanticGuide(deeplab=load_pseudolabel_deeplab(pseudolabel_model))
    elif training:
        raise SemdepthError("sde.guidance pac: training needs the pseudo-label model (data/models/pseudolabel.pt)")
    else:
        guide = SemanticGuide()
    return PacDepthNet(encoder, decoder, guide, impl=pac_impl)


@register("seem")
def seem(cfg: Any, encoder: ResnetEncoder, decoder: DepthDecoder, **options: Any) -> DepthNet:
    from semdepth.models.guidance.seem import SeemDepthNet

    return SeemDepthNet(encoder, decoder, cfg_get(cfg, "seem_points"), cfg_get(cfg, "seg_weight"),
                        bool(cfg_get(cfg, "seem_attention")))
