"""Which depth network each `sde.guidance` option builds: option name -> builder.

"none" (the plain monodepth2 network) is registered here; the guidance package
(semdepth/models/guidance/__init__.py) registers seg_branch, pac and seem when it is imported.
`semdepth.models.sde` imports both and builds through `build_on_encoder`, so the SDE code never names
a guidance module and the guidance modules never import the SDE code (no import cycle).

Every builder gets the same keyword options, so `build_depth_net`/`load_sde` can pass them through
whatever the option: training (build the training-time network), pseudolabel_model (the DeepLab
checkpoint pac is guided by), pac_impl (PAC implementation). A builder ignores those it has no use for.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from semdepth import SemdepthError
from semdepth.models.architecture import architecture_of, build_depth_decoder
from semdepth.models.depth_decoder import DepthDecoder
from semdepth.models.depth_net import DepthNet
from semdepth.models.encoder import ResnetEncoder


class DepthNetBuilder(Protocol):
    def __call__(self, cfg: Any, encoder: ResnetEncoder, decoder: DepthDecoder, *, training: bool,
                 pseudolabel_model: str | Path | None, pac_impl: str) -> DepthNet: ...


_BUILDERS: dict[str, DepthNetBuilder] = {}


def register(name: str) -> Callable[[DepthNetBuilder], DepthNetBuilder]:
    """Decorator: make `builder` the network of `sde.guidance: name`."""
    def add(builder: DepthNetBuilder) -> DepthNetBuilder:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"depth network {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder
    return add


def names() -> tuple[str, ...]:
    """The registered `sde.guidance` options, in registration order."""
    return tuple(_BUILDERS)


def cfg_get(cfg: Any, key: str) -> Any:
    """SdeConfig object or its dict form (checkpoints store the dict)."""
    return cfg[key] if isinstance(cfg, Mapping) else getattr(cfg, key)


def build_on_encoder(cfg: Any, encoder: ResnetEncoder, *, training: bool = False,
                     pseudolabel_model: str | Path | None = None, pac_impl: str = "shift") -> DepthNet:
    """The depth network `cfg.guidance` names (cfg: an SdeConfig or its dict) on `encoder`.

    The decoder is created here, right after the encoder and before anything a guided builder adds,
    so every option initialises its shared parts from the same RNG draws. Its body is the one
    `cfg.architecture` names (semdepth/models/architecture.py; "unet" for configs without the key).
    """
    guidance = cfg_get(cfg, "guidance")
    builder = _BUILDERS.get(guidance)
    if builder is None:
        raise SemdepthError(f"sde.guidance: {guidance!r} is not one of {', '.join(_BUILDERS)}")
    decoder = build_depth_decoder(architecture_of(cfg), encoder.num_ch_enc)
    return builder(cfg, encoder, decoder, training=training, pseudolabel_model=pseudolabel_model,
                   pac_impl=pac_impl)


@register("none")
def plain(cfg: Any, encoder: ResnetEncoder, decoder: DepthDecoder, **options: Any) -> DepthNet:
    """monodepth2 as it is."""
    return DepthNet(encoder, decoder)
