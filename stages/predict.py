"""`semdepth predict`: colourised depth and segmentation for any images, with the trained models.

Inputs: image files or folders (their image files, sorted, not recursive). Each image is resized
(area for shrinking, bilinear for enlarging) to the working resolution `data.height` x `data.width`
the networks were trained at, segmented by data/models/segmenter.pt and given depth by the stage-2
SDE data/models/sde_stage2.pt; results are resized back to the image's own size (nearest for the
classes) and written as `<stem>_seg.png` (Cityscapes colours) and `<stem>_depth.png` (magma on
disparity), plus with `--raw` `<stem>_seg.npy` (uint8 train ids) and `<stem>_depth.npy` (float32
depth in the SDE's units: monocular depth has no metric scale). An unreadable image stops with a
one-line error naming it, before anything is written.
"""
from __future__ import annotations

from pathlib import Path

from semdepth.config import load_params
from semdepth.data.frames import read_rgb_u8
from semdepth.layout import SDE_STAGE2, SEGMENTER
from semdepth.models.sde import load_sde
from semdepth.models.segmenter import load_segmenter
from semdepth.prediction import collect_images, output_stems, predict_image, write_prediction
from semdepth.progress import track
from semdepth.runtime import get_logger, setup


def main(inputs: list[Path], out: Path, raw: bool = False, params_path: str | Path = "params.yaml") -> None:
    params = load_params(params_path)
    device = setup(params.seed, params.compute)
    paths = collect_images(inputs)
    images = [read_rgb_u8(p) for p in paths]  # all readable before anything is written
    seg, _ = load_segmenter(SEGMENTER, device)
    depth_net, _, sde_cfg = load_sde(SDE_STAGE2, device)
    depth_range = (float(sde_cfg["min_depth"]), float(sde_cfg["max_depth"]))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stem, img in track(list(zip(output_stems(paths), images)), "predict"):
        labels, depth = predict_image(seg, depth_net, img, (params.data.height, params.data.width), depth_range,
                                      device)
        write_prediction(out, stem, labels, depth, raw)
    get_logger("semdepth.predict").info("predict: %d images -> %s", len(paths), out)
