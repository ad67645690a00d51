"""Graded and binary labels of image pairs: FoV and 3-D overlap, sparse tables, storage, UTM."""

from gcl_jax.labels.fov2d import city_pair_table, fov_overlap
from gcl_jax.labels.h5 import read_gt_h5
from gcl_jax.labels.io import label_city_cached, load_pair_table, save_pair_table
from gcl_jax.labels.pose3d import pose_overlap, quaternion_from_matrix
from gcl_jax.types import PairTable
from gcl_jax.labels.utm import city_zone, latlon_to_utm, utm_to_latlon

__all__ = [
    "PairTable",
    "city_pair_table",
    "city_zone",
    "fov_overlap",
    "label_city_cached",
    "latlon_to_utm",
    "load_pair_table",
    "pose_overlap",
    "quaternion_from_matrix",
    "read_gt_h5",
    "save_pair_table",
    "utm_to_latlon",
]
