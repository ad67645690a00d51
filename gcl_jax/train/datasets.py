"""What a run reads: the training cities with their graded labels and the evaluation sets.

This is where the readers (gcl_jax.data) and the labels (gcl_jax.labels) meet: the readers give
ImageTables, the labels module turns them into PairTables, and neither imports the other.

MSLS-layout data (formats "msls", "tfds") trains with 2-D field-of-view labels (labels.kind "fov")
between each city's queries and database. 6-DoF data (formats "sevenscenes", "json_index") trains
with 3-D overlap labels (labels.kind "pose3d") over ONE set of frames, the scene: queries and
database are the same training frames and a frame is never paired with itself. Its evaluation
searches the evaluation frames (queries) in the training frames (database).
"""

from __future__ import annotations

import dataclasses
import time

import ml_collections
import numpy as np
from absl import logging

from gcl_jax import io, losses, parallel
from gcl_jax.data import at_format, json_index, msls, pairs as pairs_lib, sevenscenes
from gcl_jax.labels import dataset as label_dataset_lib, io as labels_io, pose3d
from gcl_jax.types import DatasetError, ImageTable

FORMATS = ("msls", "tfds", "at_format", "sevenscenes", "json_index")
SIXDOF_FORMATS = ("sevenscenes", "json_index")  # 6-DoF poses: labels.kind "pose3d"
LABEL_KINDS = ("fov", "pose3d")
POSE3D_SYMMETRIC = ("mean", "min", "max", "none")


@dataclasses.dataclass
class Data:
  root: str
  train: list[pairs_lib.CityPairs]  # labelled training cities (empty when not training)
  val: list[tuple[str, ImageTable, ImageTable]]  # (name, query, database) evaluated
  fit: list[ImageTable]  # training databases: the default PCA-whitening fit set


def dataset_root(config: ml_collections.ConfigDict, workdir: str) -> str:
  """config.data.root, or the synthetic world generated (once) under <workdir>/data."""
  if config.data.root:
    return config.data.root
  from gcl_jax import synthetic  # pylint: disable=g-import-not-at-top
  root = io.join(io.absolute(workdir), "data", "synthetic_msls")
  world = synthetic.WorldConfig(train_cities=tuple(config.data.train_cities),
                                val_cities=tuple(config.data.val_cities),
                                **config.data.synthetic.to_dict())
  return synthetic.generate_world(root, world, progress=parallel.is_chief())


def label_params(config: ml_collections.ConfigDict) -> dict:
  """The FoV labelling parameters of config.labels (keyword arguments of city_pair_table)."""
  lab = config.labels
  if lab.kind != "fov":
    raise ValueError(f"config.labels.kind {lab.kind!r} is not supported here; use 'fov'")
  return dict(radius_m=lab.radius_m, fov_deg=lab.fov_deg, normalization=lab.normalization,
              cutoff_factor=lab.cutoff_factor, pos_dist_m=lab.pos_dist_m, neg_dist_m=lab.neg_dist_m)


def check_label_kind(config: ml_collections.ConfigDict) -> str:
  """config.labels.kind, checked against config.data.format (msls/tfds: "fov"; 6-DoF: "pose3d")."""
  kind, fmt = config.labels.kind, config.data.format
  if kind not in LABEL_KINDS:
    raise ValueError(f"unknown config.labels.kind {kind!r}; choose one of {LABEL_KINDS}")
  fits = "pose3d" if fmt in SIXDOF_FORMATS else "fov"
  if kind != fits:
    raise ValueError(f"config.labels.kind={kind!r} does not fit config.data.format={fmt!r}: "
                     f"{fmt!r} data trains with config.labels.kind={fits!r}")
  return kind


def pose3d_params(config: ml_collections.ConfigDict, *, with_depths: bool) -> dict:
  """The labels.pose3d_* keys as keyword arguments of labels_io.label_pose3d_cached."""
  lab = config.labels
  try:
    intrinsics = pose3d.intrinsics_from_spec(lab.pose3d_intrinsics)
  except ValueError as e:
    raise ValueError(f"config.labels.pose3d_intrinsics: {e}") from None
  if lab.pose3d_symmetric not in POSE3D_SYMMETRIC:
    raise ValueError(f"config.labels.pose3d_symmetric must be one of {POSE3D_SYMMETRIC}, got "
                     f"{lab.pose3d_symmetric!r}")
  above = lab.pose3d_positive_above
  if not (isinstance(above, (int, float)) and 0.0 <= above <= 1.0):
    raise ValueError(f"config.labels.pose3d_positive_above must be in [0, 1], got {above!r}")
  stride = lab.pose3d_stride
  if not (isinstance(stride, int) and stride >= 1):
    raise ValueError(f"config.labels.pose3d_stride must be a positive integer, got {stride!r}")
  params = dict(intrinsics=intrinsics, positive_above=float(above), stride=stride,
                symmetric=None if lab.pose3d_symmetric == "none" else lab.pose3d_symmetric)
  tolerance = lab.pose3d_depth_tolerance_m
  if with_depths:
    if tolerance is not None:
      if not tolerance > 0:
        raise ValueError("config.labels.pose3d_depth_tolerance_m must be > 0 metres or None, got "
                         f"{tolerance!r}")
      params["depth_tolerance_m"] = float(tolerance)
  else:
    max_range = lab.pose3d_max_range_m
    if not (isinstance(max_range, (int, float)) and max_range > 0.1):
      raise ValueError("config.labels.pose3d_max_range_m must be a range in metres beyond the "
                       f"0.1 m near plane, got {max_range!r}")
    params["max_range_m"] = float(max_range)
    if tolerance is not None:
      logging.warning("config.labels.pose3d_depth_tolerance_m=%s is unused: the labels use the "
                      "frustum overlap (no depth maps)", tolerance)
  return params


def _ground_axes(config: ml_collections.ConfigDict) -> tuple[int, int]:
  axes = tuple(config.data.ground_axes)
  if len(axes) != 2 or any(a not in (0, 1, 2) for a in axes) or axes[0] == axes[1]:
    raise ValueError("config.data.ground_axes must be two different world axes out of 0, 1, 2, "
                     f"got {config.data.ground_axes!r}")
  return axes


def _depth_paths(config: ml_collections.ConfigDict, frames: ImageTable) -> list[str] | None:
  """The frames' depth maps when config.labels.pose3d_use_depth and every frame has one."""
  if not config.labels.pose3d_use_depth:
    return None
  paths = [sevenscenes.depth_path(p) for p in frames.full_paths()]
  present = np.array([p is not None and io.exists(p) for p in paths], bool)
  if not present.any():
    logging.info("%s: no depth maps beside the frames; 3-D labels from the frustum overlap",
                 frames.name)
    return None
  if not present.all():
    i = int(np.flatnonzero(~present)[0])
    missing = paths[i] or f"a .depth.png beside {frames.full_paths()[i]}"
    raise DatasetError(f"{missing}: depth map not found ({int((~present).sum())} of {len(paths)} "
                       f"frames of {frames.name} lack one) while config.labels.pose3d_use_depth="
                       "True; provide them all or set it to False (frustum overlap)")
  return paths


def read_sixdof(config: ml_collections.ConfigDict, *, poses: bool
                ) -> tuple[str, ImageTable, ImageTable, np.ndarray | None]:
  """(scene name, training frames, evaluation frames, training poses (N, 4, 4) or None) of a
  "sevenscenes" or "json_index" dataset."""
  fmt, root = config.data.format, config.data.root
  axes = _ground_axes(config)
  if fmt == "sevenscenes":
    if not root:
      raise ValueError("config.data.format='sevenscenes' needs config.data.root = one 7-Scenes "
                       "scene folder (with TrainSplit.txt, TestSplit.txt and seq-NN/)")
    split = config.data.eval_split
    if split != "test":
      raise ValueError(f"config.data.eval_split={split!r}: a 7-Scenes scene evaluates its 'test' "
                       "split (queries) against its 'train' split (database) "
                       "(config.data.format='sevenscenes')")
    train_frames, train_poses = sevenscenes.read_sevenscenes(root, "train", axes)
    eval_frames = sevenscenes.read_sevenscenes(root, split, axes)[0]
    return root.rstrip("/").rsplit("/", 1)[-1], train_frames, eval_frames, train_poses
  for key in ("root", "train_index", "eval_index"):
    if not config.data[key]:
      raise ValueError(f"config.data.format='json_index' needs config.data.{key} (data.root: the "
                       "folder the index files' im_paths are relative to; data.train_index / "
                       "data.eval_index: the training and evaluation index files)")
  train_index = config.data.train_index
  train_frames = json_index.read_json_index(train_index, root, axes)
  eval_frames = json_index.read_json_index(config.data.eval_index, root, axes)
  train_poses = json_index.read_json_poses(train_index) if poses else None
  return train_frames.name, train_frames, eval_frames, train_poses


def _prepare_sixdof(config: ml_collections.ConfigDict, workdir: str, train: bool) -> Data:
  """Data of a 6-DoF scene: the training frames labelled with themselves (cached)."""
  name, frames, eval_frames, poses = read_sixdof(config, poses=train)
  root = config.data.root
  train_cities = []
  if train:
    if losses.uses_mining(config.loss.name):
      raise ValueError(f"config.loss.name={config.loss.name!r} mines tuples by camera distance "
                       f"between MSLS queries and database; config.data.format="
                       f"{config.data.format!r} trains with 'gcl' or 'contrastive'")
    depth_paths = _depth_paths(config, frames)
    table = labels_io.label_pose3d_cached(
        poses, frames.keys, labels_dir(config, root, workdir), name, depth_paths=depth_paths,
        write=parallel.is_chief(), **pose3d_params(config, with_depths=depth_paths is not None))
    logging.info("%s: %d training frames, %d labelled pairs (%s)", name, len(frames),
                 table.num_pairs, table.params["method"])
    train_cities.append(pairs_lib.CityPairs(name, frames, frames, table, exclude_self=True))
  return Data(root, train_cities, [(name, eval_frames, frames)], [frames])


def labels_dir(config: ml_collections.ConfigDict, root: str, workdir: str) -> str:
  """config.labels.dir, or `<root>/labels` (tfds: `<workdir>/labels`, the dataset is read-only)."""
  if config.labels.dir:
    return config.labels.dir
  return io.join(workdir if config.data.format == "tfds" else root, "labels")


def prepare_data(config: ml_collections.ConfigDict, workdir: str, *, train: bool = True) -> Data:
  """Reads the training and evaluation sets; labels the training cities (cached) if `train`."""
  fmt = config.data.format
  if fmt not in FORMATS:
    raise ValueError(f"unknown config.data.format {fmt!r}; choose one of {FORMATS}")
  if train and fmt != "at_format":
    check_label_kind(config)
  if fmt in SIXDOF_FORMATS:
    return _prepare_sixdof(config, workdir, train)
  if fmt == "at_format":
    if train:
      raise ValueError("training reads MSLS-layout data (config.data.format='msls' or 'tfds') or "
                       "6-DoF scenes ('sevenscenes', 'json_index'); @-format datasets are for "
                       "evaluation (--mode=eval)")
    root = dataset_root(config, workdir)
    split = config.data.eval_split
    return Data(root, [], [(split, at_format.read_at_format(root, split, "queries"),
                            at_format.read_at_format(root, split, "database"))], [])
  if fmt == "tfds":  # a dataset prepared once by python -m gcl_jax.data.tfds_builders gcl_msls
    from gcl_jax.data import files, tfds_source  # pylint: disable=g-import-not-at-top
    source = tfds_source.TfdsSource(config.data.tfds_name, config.data.tfds_data_dir or None,
                                    cache_dir=config.data.tfds_cache_dir or None)
    files.register_source(source.root, source.read)  # image paths are tfds://... from now on
    root, read_city = source.root, source.city
  else:
    root = dataset_root(config, workdir)
    read_city = lambda city, split="train_val": msls.read_msls_city(root, city, split)
  out_dir = labels_dir(config, root, workdir)
  train_cities, fit = [], []
  if train or (config.eval.pca_dim and config.eval.pca_fit == "train"):
    for city in config.data.train_cities:
      query, database = read_city(city)
      fit.append(database)
      if train:
        table = labels_io.label_city_cached(query, database, out_dir, city,
                                            write=parallel.is_chief(), **label_params(config))
        train_cities.append(pairs_lib.CityPairs(city, query, database, table))
  split = config.data.eval_split
  val = [(city, *read_city(city, split)) for city in config.data.val_cities]
  return Data(root, train_cities, val, fit)


def label(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """mode=label: labels every training city, prints a summary, draws one query's labels."""
  from gcl_jax.labels import plot  # pylint: disable=g-import-not-at-top
  if config.data.format != "msls":
    raise ValueError("--mode=label reads an MSLS tree (config.data.format='msls'); training from "
                     "a TFDS dataset labels its cities on first use")
  root = dataset_root(config, workdir)
  out_dir = labels_dir(config, root, workdir)
  cities = ((city, *msls.read_msls_city(root, city)) for city in config.data.train_cities)
  summary = label_dataset_lib.label_dataset(cities, out_dir, num_cities=len(
      config.data.train_cities), progress=parallel.is_chief(), **label_params(config))
  print(label_dataset_lib.format_summary(summary))
  city = config.data.train_cities[0]
  query, database = msls.read_msls_city(root, city)
  table = labels_io.load_pair_table(summary[city]["label_file"])
  q = int(np.argmax(np.diff(table.indptr)))  # the query with the most labelled pairs
  out_png = io.join(workdir, f"labels_{city}_query{q}.png")
  io.makedirs(workdir)
  plot.plot_query_labels(query, database, table, q, out_png, radius_m=config.labels.radius_m,
                         fov_deg=config.labels.fov_deg)
  logging.info("labels in %s; picture of query %d of %s in %s", out_dir, q, city, out_png)
  return summary


def log_ready(data: Data, t_start: float) -> None:
  logging.info("data ready in %.1f s: %d training cities, %d evaluation sets (root %s)",
               time.time() - t_start, len(data.train), len(data.val), data.root)
