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
from typing import Sequence

from semdepth import SemdepthError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}
SEG_MODEL = Path("data/models/segmenter.pt")
SDE_MODEL = Path("data/models/sde_stage2.pt")


def collect_images(inputs: Sequence[Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted); errors name the bad input."""
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise SemdepthError(f"{p}: folder has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise SemdepthError(f"{p}: no such file or folder")
    return out


def output_stems(paths: Sequence[Path]) -> list[str]:
    """File stems, made unique (`name`, `name_1`, ...) when two inputs share one."""
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        n = seen.get(p.stem, 0)
        seen[p.stem] = n + 1
        stems.append(p.stem if n == 0 else f"{p.stem}_{n}")
    return stems


def read_image(path: Path):
    """HxWx3 uint8 RGB; SemdepthError naming the file if it is not a readable image."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SemdepthError(f"{path}: cannot read image (not an image file or corrupt)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def main(inputs: list[Path], out: Path, raw: bool = False, params_path: str | Path = "params.yaml") -> None:
    import cv2
    import numpy as np
    import torch

    from semdepth.config import load_params
    from semdepth.data.frames import write_png
    from semdepth.data.labels import colorize
    from semdepth.io import atomic_file
    from semdepth.models.sde import disp_to_depth, load_sde
    from semdepth.models.segmenter import load_segmenter
    from semdepth.progress import track
    from semdepth.runtime import get_logger, setup
    from semdepth.viz import colorize_depth

    params = load_params(params_path)
    device = setup(params.seed, params.compute)
    h, w = params.data.height, params.data.width
    paths = collect_images(inputs)
    images = [read_image(p) for p in paths]  # all readable before anything is written
    seg, _ = load_segmenter(SEG_MODEL, device)
    depth_net, _, sde_cfg = load_sde(SDE_MODEL, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for path, stem, img in track(list(zip(paths, output_stems(paths), images)), "predict"):
        ih, iw = img.shape[:2]
        interp = cv2.INTER_AREA if ih * iw > h * w else cv2.INTER_LINEAR
        small = cv2.resize(img, (w, h), interpolation=interp)
        x = torch.from_numpy(small).permute(2, 0, 1).float().div(255.0)[None].to(device)
        with torch.no_grad():
            labels = seg(x, with_depth=False)["logits"].argmax(1)[0].cpu().numpy().astype(np.uint8)
            disp = depth_net(x)["disp"][0]
            depth = disp_to_depth(disp, float(sde_cfg["min_depth"]), float(sde_cfg["max_depth"]))[1][0, 0]
        depth = depth.cpu().numpy().astype(np.float32)
        labels = cv2.resize(labels, (iw, ih), interpolation=cv2.INTER_NEAREST)
        depth = cv2.resize(depth, (iw, ih), interpolation=cv2.INTER_LINEAR)
        results = {f"{stem}_seg.png": colorize(labels), f"{stem}_depth.png": colorize_depth(depth)}
        for name, arr in results.items():
            with atomic_file(out / name) as tmp:
                write_png(tmp, arr)
        if raw:
            for name, arr in ((f"{stem}_seg.npy", labels), (f"{stem}_depth.npy", depth)):
                with atomic_file(out / name) as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, arr)
    get_logger("semdepth.predict").info("predict: %d images -> %s", len(paths), out)
