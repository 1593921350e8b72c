"""Mixing augmentations for semi-supervised segmentation: DepthMix (Hoyer et al. 2021) and ClassMix.

Both produce a binary mask per image; `common.mix` then blends images and targets with the *same*
mask, so a label always travels with the pixel it describes.
"""
from semdepth.mixing.common import derangement, make_targets, mix, targets_to_labels

__all__ = ["derangement", "make_targets", "mix", "targets_to_labels"]
