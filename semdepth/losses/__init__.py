"""Training losses: photometric (SSIM + L1), minimum reprojection, smoothness, feature distance,
and the segmentation losses of later stages. Import submodules explicitly."""
