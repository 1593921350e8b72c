"""Camera geometry: back-projection, projection, pose parametrisation, warping (OpenCV camera axes)."""
from semdepth.geometry.camera import (backproject, flip_intrinsics, intrinsics_matrix, pixel_grid,
                                      pose_vec_to_mat, project, scale_intrinsics)
from semdepth.geometry.warp import warp

__all__ = ["backproject", "flip_intrinsics", "intrinsics_matrix", "pixel_grid", "pose_vec_to_mat", "project",
           "scale_intrinsics", "warp"]
