"""Typed, validated parameters.

`params.yaml` is the single source of truth for a run, and DVC hashes it key by key. A mistyped key
would silently fall back to a default and make two runs that look different in git identical in
effect, so parsing is strict: unknown keys, missing keys, wrong types and out-of-range values all
fail with the full key path. Library code receives these frozen dataclasses, never the raw YAML.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A parameter is wrong; the message is one line naming the file and key path."""


def rng(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
        doc: str = "") -> dict:
    """Field metadata for a numeric range check (closed unless *_open)."""
    return {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "doc": doc}


def num(default: Any, lo: float | None = None, hi: float | None = None, **kw: Any) -> Any:
    return field(default=default, metadata=rng(lo, hi, **kw))


def lst(default: list) -> Any:
    return field(default_factory=lambda: list(default))


def check_crop_size(key: str, height: int, width: int) -> None:
    """A training crop is off (0 x 0) or both sides set, each a multiple of the networks' stride 32, >= 64."""
    if (height == 0) != (width == 0):
        raise ConfigError(f"{key}.crop_height/crop_width: set both (or both 0 for whole frames), got {height}x{width}")
    for side, v in (("crop_height", height), ("crop_width", width)):
        if v % 32 or 0 < v < 64:
            raise ConfigError(f"{key}.{side}: {v} is not a multiple of 32 of at least 64 (the encoder's stride 32; "
                              f"the decoder's reflection padding needs 2 pixels at that level)")


# --------------------------------------------------------------------------------------------
# Groups. Field names are the YAML keys.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ComputeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    nproc: int = num(1, 1, 64)  # >1: training stages relaunch under torchrun (DDP)
    num_workers: int = num(1, 0, 64)  # DataLoader worker processes
    threads: int = num(0, 0, 256)  # torch intra-op threads; 0 = torch's default
    checkpointing: bool = False  # activation checkpointing in training (less GPU memory, same result)


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = True
    experiment: str = "semdepth"


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 1234
    height: int = num(256, 32, 4096)
    width: int = num(512, 64, 8192)
    train_snippets: int = num(120, 1, 100000)
    val_snippets: int = num(30, 1, 100000)
    source_snippets: int = num(60, 0, 100000)
    frame_offsets: list[int] = lst([-2, -1, 0, 1, 2])
    val_frame_offsets: list[int] = lst([-2, -1, 0, 1, 2])  # val renders these (evaluation reads offset 0)
    lead_car_share: float = num(0.2, 0.0, 1.0)
    lead_car_rel_speed: float = num(0.0, 0.0, 5.0)  # m/s: lead cars drive at ego speed + U(-v, v)
    lead_cars_max: int = num(1, 1, 8)  # lead-car snippets have 1..this many near-ego-speed cars ahead
    speed_min: float = num(5.0, 0.0, 60.0, lo_open=True)
    speed_max: float = num(15.0, 0.0, 60.0, lo_open=True)
    fps: float = num(17.0, 1.0, 120.0)
    workers: int = num(0, 0, 256)  # 0 = all cores

    def check(self, key: str) -> None:
        if self.speed_min > self.speed_max:
            raise ConfigError(f"{key}.speed_min: {self.speed_min} is larger than speed_max {self.speed_max}")
        if 0 not in self.frame_offsets:
            raise ConfigError(f"{key}.frame_offsets: must contain 0 (the annotated frame)")
        offsets = self.frame_offsets
        if len(set(offsets)) != len(offsets) or not all(-19 <= o <= 10 for o in offsets):
            raise ConfigError(f"{key}.frame_offsets: must be distinct and within -19..10 (frames 0..29 of a "
                              f"Cityscapes snippet around frame 19), got {self.frame_offsets}")
        if self.height % 2 or self.width % 2:
            raise ConfigError(f"{key}.height/width: must be even, got {self.height}x{self.width}")
        val = self.val_frame_offsets
        if 0 not in val or len(set(val)) != len(val) or not set(val) <= set(offsets):
            raise ConfigError(f"{key}.val_frame_offsets: must contain 0 and be distinct offsets of "
                              f"{key}.frame_offsets {offsets}, got {val}")
        if self.lead_car_rel_speed > self.speed_min:
            raise ConfigError(f"{key}.lead_car_rel_speed: {self.lead_car_rel_speed} is larger than speed_min "
                              f"{self.speed_min} (a lead car would drive backwards)")


@dataclass(frozen=True)
class DataConfig:
    raw_dir: str = "data/raw/synthcity"
    height: int = num(96, 32, 4096)
    width: int = num(192, 32, 8192)
    frame_offsets: list[int] = lst([-1, 0, 1])
    splits: list[str] = lst(["train", "val", "source"])
    hood_fraction: float = num(0.1, 0.0, 0.9)  # bottom share of rows showing the ego hood
    workers: int = num(0, 0, 256)  # 0 = all cores

    def check(self, key: str) -> None:
        for name, v in (("height", self.height), ("width", self.width)):
            if v % 32:
                raise ConfigError(f"{key}.{name}: {v} is not a multiple of 32 (the encoder downsamples 5 times)")
        if 0 not in self.frame_offsets:
            raise ConfigError(f"{key}.frame_offsets: must contain 0 (the annotated frame)")


@dataclass(frozen=True)
class PseudolabelConfig:
    model: Literal["deeplabv3_resnet18", "deeplabv3_resnet34", "deeplabv3_resnet50", "deeplabv3_resnet101",
                   "deeplabv3_mobilenet_v3_large"] = "deeplabv3_resnet18"
    weights: str = "train"  # train | torchvision-coco | <path to a state dict>
    steps: int = num(200, 1, 10_000_000)
    batch_size: int = num(8, 2, 1024)  # >= 2: BatchNorm in DeepLabV3's image-pooling branch
    lr: float = num(0.05, 0.0, 10.0, lo_open=True)
    weight_decay: float = num(1e-4, 0.0, 1.0)
    scale_min: float = num(0.75, 0.1, 4.0)
    scale_max: float = num(1.5, 0.1, 4.0)
    color_jitter: float = num(0.3, 0.0, 1.0)
    infer_batch_size: int = num(16, 1, 1024)
    # train and infer at height x width read from data.raw_dir (0 x 0 = the working resolution, the
    # prepared frames); maps are resized back to the working resolution
    height: int = num(0, 0, 16384)
    width: int = num(0, 0, 16384)
    output_stride: int = field(default=0, metadata={"choices": [0, 8, 16]})  # 0 = the model's own
    loss: Literal["ce", "balanced", "ohem"] = "ce"  # balanced: source class-frequency weights
    ohem_keep: float = num(0.25, 0.0, 1.0, lo_open=True)  # ohem: share of the hardest pixels kept
    cpu_bf16: bool = False  # bf16 autocast on CPU too (CUDA always uses it)

    def check(self, key: str) -> None:
        if self.scale_min > self.scale_max:
            raise ConfigError(f"{key}.scale_min: {self.scale_min} is larger than scale_max {self.scale_max}")
        if (self.height == 0) != (self.width == 0):
            raise ConfigError(f"{key}.height: {self.height}x{self.width}: set both height and width, "
                              f"or both to 0 (the working resolution)")
        for name, v in (("height", self.height), ("width", self.width)):
            if v % 16:
                raise ConfigError(f"{key}.{name}: {v} is not a multiple of 16 (the network's output stride)")


@dataclass(frozen=True)
class SdeConfig:
    encoder_layers: int = field(default=18, metadata={"choices": [18, 34, 50, 101]})
    architecture: Literal["unet", "aspp"] = "unet"  # aspp: Hoyer's dilated encoder + ASPP U-Net
    pretrained: str = "none"  # none | source | imagenet | <path>
    guidance: Literal["none", "seg_branch", "pac", "seem"] = "none"
    steps: int = num(1500, 1, 10_000_000)
    batch_size: int = num(8, 1, 1024)
    lr: float = num(1e-4, 0.0, 1.0, lo_open=True)
    lr_step: int = num(1000, 1, 10_000_000)  # multiply lr by lr_decay every lr_step steps
    lr_decay: float = num(0.1, 0.0, 1.0, lo_open=True)
    min_depth: float = num(0.1, 0.0, 1e4, lo_open=True)
    max_depth: float = num(100.0, 0.0, 1e5, lo_open=True)
    smoothness: float = num(1e-3, 0.0, 10.0)
    # monodepth2's auto-mask: a pixel counts only where a warped source beats the unwarped one. Off, objects
    # moving with the camera pull depth towards infinity (the artifact the two-stage filter targets).
    automask: bool = True
    pose_forward_init: float = num(0.03, 0.0, 10.0)  # initial forward translation per frame (0 = monodepth2)
    # photometric sources, frame offsets from the target: [-1, 1] (monodepth2); [-2, 2] a wider stride;
    # [-2, -1, 1, 2] all four, min over them. Each must be prepared (data.frame_offsets).
    source_offsets: list[int] = lst([-1, 1])
    pose_scale: float = num(1.0, 0.0, 1.0, lo_open=True)  # pose-net input size / image size (area-resized)
    # random training crops, both 0 = whole frames (Hoyer: 512x512 of 1024x512); multiples of 32
    crop_height: int = num(0, 0, 8192)
    crop_width: int = num(0, 0, 8192)
    # step speed (benchmarks/sde_step.py): Adam's fused kernel (equal up to ~1e-9 per update, not bit for
    # bit) and channels_last networks and tensors (faster on AVX-512 CPUs, slower on some AVX2 ones)
    fused_adam: bool = False
    channels_last: bool = False
    flip_prob: float = num(0.5, 0.0, 1.0)
    jitter_prob: float = num(0.5, 0.0, 1.0)
    phase1_steps: int = num(0, 0, 10_000_000)  # pretrained encoder only: steps with the encoder frozen
    phase2_lr: float = num(1e-5, 0.0, 1.0, lo_open=True)
    feature_distance: float = num(1e-2, 0.0, 100.0)  # Hoyer's ImageNet/source feature-distance weight
    seg_weight: float = num(5e-4, 0.0, 100.0)  # seg_branch BCE weight
    seem_points: int = num(3000, 1, 1_000_000)  # at 640x192, scaled with image area
    seem_attention: bool = False
    checkpoint_every: int = num(200, 1, 10_000_000)
    seed: int = 0  # depth and pose networks: initialisation, data order, augmentation (an ablation seed)

    def check(self, key: str) -> None:
        if self.min_depth >= self.max_depth:
            raise ConfigError(f"{key}.min_depth: {self.min_depth} must be below max_depth {self.max_depth}")
        offs = self.source_offsets
        if 0 in offs or len(set(offs)) != len(offs) or list(offs) != sorted(offs):
            raise ConfigError(f"{key}.source_offsets: must be distinct non-zero frame offsets in increasing order "
                              f"(e.g. [-1, 1]), got {offs}")
        check_crop_size(key, self.crop_height, self.crop_width)
        if self.architecture == "aspp" and self.guidance == "seem":
            raise ConfigError(f"{key}.guidance: seem is implemented for architecture unet only (its semantic "
                              f"decoder and attention assume the U-Net widths)")


@dataclass(frozen=True)
class SelectConfig:
    method: Literal["ds_us", "ds", "us", "random"] = "ds_us"
    n_labels: int = num(24, 1, 1_000_000)
    rounds: list[int] = lst([6, 12, 24])  # selection-set size after each round (paper: 25,50,100,...)
    uncertainty_weight: float = num(1000.0, 0.0, 1e9)  # lambda in dist + lambda * E
    student_steps: list[int] = lst([60, 90, 120])  # student training steps in each round
    student_layers: int = field(default=18, metadata={"choices": [18, 34, 50]})
    batch_size: int = num(4, 1, 1024)
    lr: float = num(1e-4, 0.0, 1.0, lo_open=True)
    seed: int = 42

    def check(self, key: str) -> None:
        if len(self.rounds) != len(self.student_steps):
            raise ConfigError(f"{key}.student_steps: needs one entry per round ({len(self.rounds)}), "
                              f"got {len(self.student_steps)}")
        if any(b <= a for a, b in zip(self.rounds, self.rounds[1:])) or self.rounds[0] < 1:
            raise ConfigError(f"{key}.rounds: must be positive and strictly increasing, got {self.rounds}")
        if self.rounds[-1] != self.n_labels:
            raise ConfigError(f"{key}.rounds: the last round must equal n_labels ({self.n_labels}), "
                              f"got {self.rounds[-1]}")


@dataclass(frozen=True)
class FilterConfig:
    ransac_iterations: int = num(256, 1, 100_000)
    inlier_threshold: float = num(0.05, 0.0, 10.0, lo_open=True)  # fraction of the camera height
    margin: float = num(1.0, 0.0, 10.0)  # below-ground margin, fraction of the camera height
    threshold_px: float = num(10.0, 0.0, 1e9)  # dropped when more below-ground pixels, at 640x192 ...
    reference_area: int = num(640 * 192, 1, 10**9)  # ... scaled by (H*W)/reference_area
    near_range: float = num(20.0, 0.0, 1e4, lo_open=True)  # ground fit and counting within this many camera heights
    min_ground_points: int = num(50, 3, 10**9)
    max_tilt: float = num(30.0, 0.0, 90.0, lo_open=True)  # degrees between a plane hypothesis and the camera up axis
    batch_size: int = num(16, 1, 1024)


@dataclass(frozen=True)
class FinetuneConfig:
    init: Literal["sde", "scratch", "source", "imagenet"] = "sde"
    multitask: bool = True
    mix: Literal["depthmix", "classmix", "none"] = "depthmix"
    steps: int = num(800, 1, 10_000_000)
    batch_labeled: int = num(4, 1, 1024)
    batch_unlabeled: int = num(4, 2, 1024)
    lr_encoder: float = num(1e-3, 0.0, 10.0)
    lr_decoder: float = num(1e-2, 0.0, 10.0)
    momentum: float = num(0.9, 0.0, 1.0)
    weight_decay: float = num(5e-4, 0.0, 1.0)
    lr_decay_at: float = num(0.75, 0.0, 1.0)  # fraction of steps after which lr drops x0.1
    ema_alpha: float = num(0.99, 0.0, 1.0)
    conf_threshold: float = num(0.968, 0.0, 1.0)
    unsup_weight: float = num(1.0, 0.0, 100.0)
    depth_weight: float = num(1.0, 0.0, 100.0)  # self-supervised depth loss in multi-task mode
    checkpoint_every: int = num(200, 1, 10_000_000)
    labels: Literal["selected", "all"] = "selected"  # all: every annotated train frame (the oracle)
    # random training crops of every finetune image, both 0 = whole frames (Hoyer: 512x512); multiples of 32
    crop_height: int = num(0, 0, 8192)
    crop_width: int = num(0, 0, 8192)
    seed: int = 0  # the segmenter: decoder initialisation, data order, mixing (an ablation seed)

    def check(self, key: str) -> None:
        check_crop_size(key, self.crop_height, self.crop_width)


@dataclass(frozen=True)
class EvalConfig:
    edge_band: int = num(3, 0, 1000)  # half-width in pixels of the band around semantic edges
    min_depth: float = num(1e-3, 0.0, 1e4, lo_open=True)
    max_depth: float = num(80.0, 0.0, 1e5, lo_open=True)
    figures: int = num(4, 1, 1000)  # qualitative rows in samples.png (a declared output, so >= 1)
    batch_size: int = num(16, 1, 1024)
    # depth protocol: project (val, hood rows excluded) | cityscapes (ManyDepth: test split, crop)
    protocol: Literal["project", "cityscapes"] = "project"


@dataclass(frozen=True)
class Params:
    seed: int = 0  # pseudolabel training and the filter's RANSAC draws (sde.seed, finetune.seed: the networks)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pseudolabel: PseudolabelConfig = field(default_factory=PseudolabelConfig)
    sde: SdeConfig = field(default_factory=SdeConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def check(self, key: str) -> None:
        """Cross-group checks: the training crops must fit in the prepared frames (data.height x width)."""
        for name, group in (("sde", self.sde), ("finetune", self.finetune)):
            if group.crop_height > self.data.height or group.crop_width > self.data.width:
                raise ConfigError(f"{name}.crop_height/crop_width: crop {group.crop_height}x{group.crop_width} is "
                                  f"larger than the prepared frames (data.height x data.width "
                                  f"{self.data.height}x{self.data.width})")


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (list, typing.List):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _parse_section(tp, value, key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}{hint}")
        return value
    if origin in (list, typing.List):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a {_type_name(tp)}, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        out = [_coerce(v, item_tp, f"{key}[{i}]", {}) for i, v in enumerate(value)]
        if not out:
            raise ConfigError(f"{key}: must not be empty")
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, meta['choices']))}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
        op = ">" if meta.get("lo_open") else ">="
        raise ConfigError(f"{key}: {value!r} is out of range (must be {op} {lo})")
    if hi is not None and (value > hi or (meta.get("hi_open") and value == hi)):
        op = "<" if meta.get("hi_open") else "<="
        raise ConfigError(f"{key}: {value!r} is out of range (must be {op} {hi})")
    return value


def _parse_section(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix or "top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in fields:
            full = f"{prefix}.{k}" if prefix else str(k)
            close = difflib.get_close_matches(str(k), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)" if close else ""
            raise ConfigError(f"{full}: unknown key{hint}")
    values = {}
    for name, f in fields.items():
        full = f"{prefix}.{name}" if prefix else name
        if name not in raw:
            raise ConfigError(f"{full}: missing key")
        values[name] = _coerce(raw[name], hints[name], full, dict(f.metadata))
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check(prefix)
    return obj


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a parsed YAML mapping; errors are prefixed with `source`."""
    try:
        return _parse_section(Params, raw, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read params file ({e.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    return parse_params(raw, str(path))


def to_dict(obj: Any) -> Any:
    """Plain nested dict of a config object (for checkpoints and MLflow)."""
    return dataclasses.asdict(obj)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become strings (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# --------------------------------------------------------------------------------------------
# Scoped views: a stage reads only the params it declares
# --------------------------------------------------------------------------------------------
ALWAYS_READABLE = ("compute", "tracking")  # speed and logging only; never a stage's dependency


class _GroupView:
    """Read-only view of one params group that allows only some of its keys.

    Why: DVC reruns a stage only when a key listed in its dvc.yaml `params:` changes. A stage that
    read any other key would depend on it without DVC knowing, and a cached result would be stale.
    """

    def __init__(self, owner: str, group: str, obj: Any, allowed: frozenset[str]) -> None:
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_group", group)
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_allowed", allowed)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in self._allowed:
            raise ConfigError(f"stage {self._owner}: reads {self._group}.{name}, which is not among its params "
                              f"(semdepth/layout.py STAGES and dvc.yaml)")
        return getattr(self._obj, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("params are read-only")

    def __repr__(self) -> str:
        return f"<{self._group} params of stage {self._owner}: {sorted(self._allowed)}>"


def scoped(params: Params, owner: str, keys: tuple[str, ...] | list[str],
           speed_only: tuple[str, ...] | list[str] = ()) -> Any:
    """A view of `params` exposing only `keys` (+ `speed_only`, + compute/tracking) to stage `owner`.

    A key is a group ("sde") or a group field ("sde.min_depth") or a top-level field ("seed"). A
    group whose every field is allowed is returned as the real typed object, so library functions
    can take it whole; a partly allowed group is a view that names the missing key when read.
    """
    allowed = {*keys, *speed_only, *ALWAYS_READABLE}
    members: dict[str, Any] = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if not dataclasses.is_dataclass(value):
            if f.name in allowed:
                members[f.name] = value
            continue
        if f.name in allowed:
            members[f.name] = value
            continue
        names = frozenset(k.split(".", 1)[1] for k in allowed if k.startswith(f.name + "."))
        if names >= {g.name for g in dataclasses.fields(value)}:
            members[f.name] = value
        else:
            members[f.name] = _GroupView(owner, f.name, value, names)
    return _ScopedParams(owner, members)


class _ScopedParams:
    """What `scoped` returns: attribute access like `Params`, refusing keys the stage did not declare."""

    def __init__(self, owner: str, members: dict[str, Any]) -> None:
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_members", members)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in self._members:
            raise ConfigError(f"stage {self._owner}: reads {name}, which is not among its params "
                              f"(semdepth/layout.py STAGES and dvc.yaml)")
        return self._members[name]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("params are read-only")


def declared_values(params: Params, keys: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Flat {key: value} of the declared keys (groups expanded): what a stage logs as its run params."""
    out: dict[str, Any] = {}
    for key in keys:
        obj: Any = params
        for part in key.split("."):
            obj = getattr(obj, part)
        out.update(flatten(to_dict(obj), key + ".") if dataclasses.is_dataclass(obj) else {key: obj})
    return out
