"""Evaluation metrics: segmentation confusion matrix / IoU, depth errors. Import submodules explicitly."""
