"""Checks a whole config before a run generates or reads any data: `validate_config`.

    validate_config(config, "train")   # raises ConfigError naming the key, its value, what fits

Every choice (loss, protocol, architecture, pooling, format, label kind, optimizer, ...) is
checked against the names the library accepts, sizes must be positive, batch sizes divisible by
the devices and processes, value ranges hold (strata_probs sum to 1, margins > 0, ...), and the
paths a run reads (data.root, model.init_checkpoint, the JSON index files, eval.gt_h5, the parent
of labels.dir, ...) exist. The checks only reject configs that would fail later anyway, after
minutes or hours; a config that validates may still fail on its data (see
`python main.py --mode=check_data`, `check_dataset` below).

`override_error` turns a command-line override of a key the config does not have
(`--config.loss.margn=0.7`) into one line with the closest key.

This module sits at the level of gcl_jax.train: it imports the constants of the layers below.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import os
from collections.abc import Callable, Sequence

import ml_collections

from gcl_jax import io
from gcl_jax.types import UserError

# The library's names (losses, architectures, protocols, ...) are imported where they are checked:
# importing them starts JAX (and TensorFlow for the input pipeline's), and `override_error` must
# answer a mistyped command line at once.
# pylint: disable=g-import-not-at-top

TRAIN_MODES = ("train", "compare")  # modes that train (labels, loss, optimizer, batch sizes)
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
NORMS = ("batch", "group")
DTYPES = ("float32", "bfloat16")
VGG_ENDS = ("pool5", "conv5_3")
EMPTY_STRATUM = ("drop", "redraw")
PCA_FITS = ("train", "eval_database")
MSLS_SPLITS = ("train_val", "test")
# The names of gcl_jax.data.pipeline.RESIZE_METHODS and gcl_jax.data.stream.BAD_IMAGES (equal, a
# test checks): those modules import TensorFlow, which validating a config does not need.
RESIZE_METHODS = ("tf", "pil")
BAD_IMAGES = ("error", "skip")


class ConfigError(UserError, ValueError):
  """An invalid config value; the message names the key, the value and what is allowed.

  Attributes:
    key: the dotted key at fault, e.g. "loss.name".
  """

  def __init__(self, key: str, message: str):
    super().__init__(f"config.{key}: {message}")
    self.key = key


def _get(config: ml_collections.ConfigDict, key: str):
  value = config
  for part in key.split("."):
    value = value[part]
  return value


class _Checker:
  """The checks of one config; each raises ConfigError naming its key."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  def value(self, key: str):
    return _get(self.config, key)

  def fail(self, key: str, message: str):
    raise ConfigError(key, f"{self.value(key)!r} {message}")

  def choice(self, key: str, allowed: Sequence[str]) -> str:
    v = self.value(key)
    if v not in allowed:
      close = difflib.get_close_matches(str(v), [str(a) for a in allowed], n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      self.fail(key, f"is not one of {list(allowed)}{hint}")
    return v

  def number(self, key: str, *, low: float | None = None, high: float | None = None,
             low_open: bool = False, high_open: bool = False, integer: bool = False,
             optional: bool = False):
    """The value at `key`, a finite number (an integer if `integer`) within the bounds."""
    v = self.value(key)
    if v is None and optional:
      return v
    kind = "an integer" if integer else "a number"
    if isinstance(v, bool) or not isinstance(v, numbers.Integral if integer else numbers.Real):
      self.fail(key, f"is not {kind}")
    if not math.isfinite(v):
      self.fail(key, "is not finite")
    lo = low is not None and (v <= low if low_open else v < low)
    hi = high is not None and (v >= high if high_open else v > high)
    if lo or hi:
      left = "(" if low_open else "["
      right = ")" if high_open else "]"
      span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
      self.fail(key, f"must be {kind} in {span}")
    return v

  def positive_int(self, key: str, optional: bool = False):
    return self.number(key, low=1, integer=True, optional=optional)

  def numbers(self, key: str, length: int, *, positive: bool = False, integer: bool = False):
    v = self.value(key)
    kind = "integers" if integer else "numbers"
    t = numbers.Integral if integer else numbers.Real
    if (isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) != length
        or any(isinstance(x, bool) or not isinstance(x, t) or not math.isfinite(x) for x in v)):
      self.fail(key, f"must be {length} {kind}")
    if positive and any(x <= 0 for x in v):
      self.fail(key, f"must be {length} positive {kind}")
    return tuple(v)

  def path(self, key: str, *, directory: bool = False, what: str = "file"):
    """An empty value, or a path that exists (a directory if `directory`)."""
    v = self.value(key)
    if v and not (io.isdir(v) if directory else io.exists(v)):
      self.fail(key, f"does not exist (the {what})" if not io.exists(v) else
                f"is not a directory (the {what})")
    return v

  def required(self, key: str, why: str):
    if not self.value(key):
      raise ConfigError(key, f"is empty; {why}")


def validate_config(config: ml_collections.ConfigDict, mode: str = "train", *,
                    num_devices: int | None = None, process_count: int | None = None) -> None:
  """Checks `config` for running `mode`, before anything is generated or read.

  Args:
    config: a config of configs/ (with its command-line overrides).
    mode: the main.py mode: "train", "compare" (these also check what training needs), "eval",
      "label", "check_data", or another (only the mode-independent checks).
    num_devices, process_count: what batch sizes must be divisible by; default the devices and
      processes JAX sees (call after jax.distributed.initialize()).

  Raises:
    ConfigError: naming the first invalid key, its value and what is allowed.
  """
  c = _Checker(config)
  training = mode in TRAIN_MODES
  _check_data(c, config, mode)
  _check_labels(c, config, training)
  _check_sampler(c)
  _check_model(c, config)
  _check_loss(c, config, training)
  _check_train(c, config, training, num_devices, process_count)
  _check_optimizer(c, config)
  _check_eval(c, config)
  if mode == "compare":
    _check_compare(c, config)


def _check_data(c: _Checker, config, mode: str) -> None:
  from gcl_jax.train import datasets
  fmt = c.choice("data.format", datasets.FORMATS)
  d = config.data
  c.number("seed", integer=True)
  c.numbers("data.image_size", 2, positive=True, integer=True)
  c.numbers("data.mean", 3)
  c.numbers("data.std", 3, positive=True)
  c.choice("data.resize_method", RESIZE_METHODS)
  if d.fast_decode and d.resize_method != "pil":
    c.fail("data.resize_method", "cannot decode fast (config.data.fast_decode=True needs 'pil')")
  c.choice("data.bad_images", BAD_IMAGES)
  axes = tuple(d.ground_axes)
  if len(axes) != 2 or any(a not in (0, 1, 2) for a in axes) or axes[0] == axes[1]:
    c.fail("data.ground_axes", "must be two different world axes out of 0, 1, 2")
  for key in ("data.train_cities", "data.val_cities"):
    v = c.value(key)
    if isinstance(v, str) or not all(isinstance(x, str) and x and "/" not in x for x in v):
      c.fail(key, "must be a sequence of city names (folder names)")
  if mode in TRAIN_MODES and fmt in ("msls", "tfds") and not d.train_cities:
    c.fail("data.train_cities", "is empty: training needs at least one city")
  if mode in TRAIN_MODES and fmt == "at_format":
    c.fail("data.format", "is for evaluation (--mode=eval); training reads 'msls', 'tfds', "
           "'sevenscenes' or 'json_index'")
  if mode == "label" and fmt != "msls":
    c.fail("data.format", "cannot be labelled by --mode=label, which reads an MSLS tree "
           "('msls'); training from other formats labels on first use")
  c.path("data.root", directory=True, what="dataset root")
  if mode == "check_data":
    if fmt == "tfds":
      c.fail("data.format", "is not checked by --mode=check_data, which scans files on disk "
             "(a TFDS dataset was checked when it was prepared)")
    c.required("data.root", "--mode=check_data checks a dataset on disk (the synthetic world is "
               "generated by a run)")
  if fmt == "msls":
    c.choice("data.eval_split", MSLS_SPLITS)
    if not d.root:  # the synthetic world generated under the workdir
      _check_synthetic(config)
  elif fmt == "at_format":
    c.required("data.root", "data.format='at_format' reads images/<split>/{database,queries}/ "
               "under it")
  elif fmt == "sevenscenes":
    c.required("data.root", "data.format='sevenscenes' needs ONE 7-Scenes scene folder (with "
               "TrainSplit.txt, TestSplit.txt and seq-NN/)")
    if d.eval_split != "test":
      c.fail("data.eval_split", "is not 'test': a 7-Scenes scene evaluates its 'test' split "
             "against its 'train' split")
  elif fmt == "json_index":
    for key, why in (("root", "the folder the index files' im_paths are relative to"),
                     ("train_index", "the training index file"),
                     ("eval_index", "the evaluation index file")):
      c.required(f"data.{key}", f"data.format='json_index' needs {why}")
    c.path("data.train_index", what="training index file")
    c.path("data.eval_index", what="evaluation index file")
  elif fmt == "tfds":
    c.path("data.tfds_data_dir", directory=True, what="TFDS data_dir")
    c.required("data.tfds_name", "data.format='tfds' reads a prepared TFDS dataset")
    parent = _parent(d.tfds_cache_dir)
    if d.tfds_cache_dir and not io.isdir(d.tfds_cache_dir) and not io.isdir(parent):
      c.fail("data.tfds_cache_dir", f"cannot be created: its parent {parent} does not exist")


def _parent(p: str) -> str:
  return str(io.path(p.rstrip("/")).parent)


def _check_synthetic(config) -> None:
  from gcl_jax import synthetic
  from gcl_jax.data import msls
  real = [c for c in (*config.data.train_cities, *config.data.val_cities)
          if c in (*msls.TRAIN_CITIES, *msls.VAL_CITIES, *msls.TEST_CITIES)]
  if real:
    raise ConfigError("data.root", f"is empty (a synthetic world would be generated) but the "
                      f"cities are MSLS cities ({', '.join(real[:3])}, ...): set config.data.root "
                      "to the MSLS dataset")
  try:
    synthetic.WorldConfig(train_cities=tuple(config.data.train_cities),
                          val_cities=tuple(config.data.val_cities),
                          **config.data.synthetic.to_dict())
  except (TypeError, ValueError) as e:
    raise ConfigError("data.synthetic", f"(the generated world, data.root empty): {e}") from None


def _check_labels(c: _Checker, config, training: bool) -> None:
  from gcl_jax.labels import fov2d, pose3d
  from gcl_jax.train import datasets
  lab = config.labels
  kind = c.choice("labels.kind", datasets.LABEL_KINDS)
  if training and config.data.format != "at_format":
    fits = "pose3d" if config.data.format in datasets.SIXDOF_FORMATS else "fov"
    if kind != fits:
      c.fail("labels.kind", f"does not fit config.data.format={config.data.format!r}, which "
             f"trains with {fits!r}")
  if lab.dir:
    parent = _parent(lab.dir)
    if not io.isdir(lab.dir) and not io.isdir(parent):
      c.fail("labels.dir", f"cannot be created: its parent {parent} does not exist")
  names = ("radius_m", "fov_deg", "normalization", "cutoff_factor", "pos_dist_m", "neg_dist_m")
  try:
    fov2d.pair_table_params(**{k: lab[k] for k in names})
  except (TypeError, ValueError) as e:
    bad = next((k for k in names if k in str(e)), names[0])
    raise ConfigError(f"labels.{bad}", f"{lab[bad]!r}: {e}") from None
  if kind == "pose3d":
    try:
      pose3d.intrinsics_from_spec(lab.pose3d_intrinsics)
    except ValueError as e:
      raise ConfigError("labels.pose3d_intrinsics", str(e)) from None
    c.choice("labels.pose3d_symmetric", datasets.POSE3D_SYMMETRIC)
    c.number("labels.pose3d_positive_above", low=0.0, high=1.0)
    c.positive_int("labels.pose3d_stride")
    c.number("labels.pose3d_depth_tolerance_m", low=0.0, low_open=True, optional=True)
    c.number("labels.pose3d_max_range_m", low=0.1, low_open=True)


def _check_sampler(c: _Checker) -> None:
  probs = c.numbers("sampler.strata_probs", 3)
  if any(p < 0 for p in probs) or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
    c.fail("sampler.strata_probs", "must be 3 non-negative probabilities (positive, soft "
           "negative, hard negative) summing to 1")
  c.number("sampler.pos_threshold", low=0.0, high=1.0, low_open=True)
  c.choice("sampler.empty_stratum", EMPTY_STRATUM)
  c.positive_int("sampler.chunk_size")


def _check_model(c: _Checker, config) -> None:
  from gcl_jax.models import descriptor, freeze
  m = config.model
  arch = c.choice("model.arch", descriptor.BACKBONES)
  c.positive_int("model.width")
  norm = c.choice("model.norm", NORMS)
  groups = c.positive_int("model.norm_groups")
  if norm == "group" and arch != "vgg16" and m.width % groups:
    c.fail("model.norm_groups", f"does not divide config.model.width={m.width} (GroupNorm splits "
           "every layer's channels into equal groups)")
  pool = c.choice("model.pool", descriptor.POOLS)
  if pool == "gem":
    c.number("model.gem_p", low=0.0, low_open=True)
  c.positive_int("model.netvlad_clusters")
  c.number("model.whitening_dim", low=0, integer=True)
  c.choice("model.vgg_end", VGG_ENDS)
  c.number("model.last_layer", low=0, integer=True, optional=True)
  c.choice("model.bn_mode", freeze.BN_MODES)
  c.path("model.init_checkpoint", directory=False, what="weights to start from")
  c.choice("model.dtype", DTYPES)


def _check_loss(c: _Checker, config, training: bool) -> None:
  from gcl_jax import losses
  from gcl_jax.data import mining
  from gcl_jax.train import datasets
  name = c.choice("loss.name", losses.LOSS_NAMES)
  c.number("loss.margin", low=0.0, low_open=True)
  m = config.loss.mining
  c.choice("loss.mining.keep_rule", mining.KEEP_RULES)
  for key in ("num_negatives", "cache_queries", "num_negative_samples"):
    c.positive_int(f"loss.mining.{key}")
  c.number("loss.mining.margin", low=0.0)
  c.number("loss.mining.pos_dist_m", low=0.0)
  c.number("loss.mining.neg_dist_m", low=0.0)
  if m.num_negative_samples < m.num_negatives:
    c.fail("loss.mining.num_negative_samples", f"is below config.loss.mining.num_negatives="
           f"{m.num_negatives}")
  if m.pos_dist_m > m.neg_dist_m:
    c.fail("loss.mining.pos_dist_m", f"exceeds config.loss.mining.neg_dist_m={m.neg_dist_m!r}")
  if training and losses.uses_mining(name) and config.data.format in datasets.SIXDOF_FORMATS:
    c.fail("loss.name", f"mines tuples between MSLS queries and database; config.data.format="
           f"{config.data.format!r} trains with 'gcl' or 'contrastive'")


def _check_optimizer(c: _Checker, config) -> None:
  c.choice("optimizer.name", OPTIMIZERS)
  c.number("optimizer.learning_rate", low=0.0, low_open=True)
  c.number("optimizer.momentum", low=0.0, high=1.0, high_open=True)
  c.number("optimizer.weight_decay", low=0.0)
  schedule = c.choice("optimizer.schedule", SCHEDULES)
  if schedule == "step":
    c.positive_int("optimizer.decay_steps")
    c.number("optimizer.decay_factor", low=0.0, low_open=True)
  c.number("optimizer.warmup_steps", low=0, integer=True)
  if schedule == "cosine" and config.optimizer.warmup_steps >= config.train.num_steps:
    c.fail("optimizer.warmup_steps", f"must be below config.train.num_steps="
           f"{config.train.num_steps}")


def _check_train(c: _Checker, config, training: bool, num_devices: int | None,
                 process_count: int | None) -> None:
  bs = c.positive_int("train.batch_size")
  c.positive_int("train.num_steps")
  accum = c.positive_int("train.grad_accum_steps")
  c.number("train.log_every_steps", low=0, integer=True)
  c.number("train.checkpoint_every_steps", low=0, integer=True)
  c.positive_int("train.max_checkpoints_to_keep")
  c.number("train.eval_every_steps", low=0, integer=True)
  if not training:
    return
  if num_devices is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    num_devices = jax.device_count() if num_devices is None else num_devices
    process_count = jax.process_count() if process_count is None else process_count
  if bs % (accum * num_devices) or bs % process_count:
    c.fail("train.batch_size", f"is not a multiple of config.train.grad_accum_steps ({accum}) x "
           f"devices ({num_devices}) = {accum * num_devices} and of the processes "
           f"({process_count})")


def _check_eval(c: _Checker, config) -> None:
  from gcl_jax.evaluation import protocols
  e = config.eval
  protocol = c.choice("eval.protocol", protocols.PROTOCOLS)
  if protocol == "gt_h5":
    c.required("eval.gt_h5", "config.eval.protocol='gt_h5' reads positives from a *_gt.h5 file")
    c.path("eval.gt_h5", what="ground-truth file")
  c.number("eval.radius_m", low=0.0, low_open=True)
  ns = e.ns
  if (isinstance(ns, (str, bytes)) or not isinstance(ns, Sequence) or not ns or
      any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in ns)):
    c.fail("eval.ns", "must be a non-empty sequence of positive integers (Recall@N)")
  c.positive_int("eval.batch_size")
  c.numbers("eval.thumbnail_size", 2, positive=True, integer=True)
  c.number("eval.num_vis_queries", low=0, integer=True)
  c.number("eval.pca_dim", low=0, integer=True)
  c.choice("eval.pca_fit", PCA_FITS)
  c.positive_int("eval.pca_num_fit")


def _check_compare(c: _Checker, config) -> None:
  from gcl_jax.train import compare
  try:
    compare.variant_names(config)
  except ValueError as e:
    raise ConfigError("compare.losses", str(e)) from None
  c.positive_int("compare.seeds")
  c.number("compare.budget_images", low=0, integer=True)
  c.positive_int("compare.num_evals")
  c.path("compare.transfer_root", directory=True, what="@-format dataset evaluated zero-shot")


def override_error(config: ml_collections.ConfigDict, path: str) -> str | None:
  """Why the command-line override `--config.<path>=...` names no key of `config` (or None).

  E.g. "config.loss has no key 'margn'; did you mean 'margin'?".
  """
  node, where = config, "config"
  for part in path.split("."):
    if not isinstance(node, (ml_collections.ConfigDict, dict)):
      return f"{where} is a value ({node!r}), it has no key {part!r}"
    keys = list(node.keys())
    if part not in keys:
      close = difflib.get_close_matches(part, keys, n=1, cutoff=0.6)
      hint = f"; did you mean {close[0]!r}?" if close else f"; its keys: {', '.join(keys)}"
      return f"{where} has no key {part!r}{hint}"
    node, where = node[part], f"{where}.{part}"
  return None


# ---- --mode=check_data: the configured dataset, scanned -------------------------------------

def label_status(config: ml_collections.ConfigDict, root: str, workdir: str,
                 cities: Sequence[tuple[str, object, object]]) -> dict[str, str]:
  """{city: "cached" | "computed on first use (<why>)"} of the training cities' label cache.

  Args:
    config: the run's config (labels.*).
    root: the dataset root; workdir: the run's workdir (where the tfds label cache lives).
    cities: (name, query ImageTable, database ImageTable) of the training cities (FoV labels).
  """
  from gcl_jax.labels import fov2d, io as labels_io
  from gcl_jax.train import datasets
  out_dir = datasets.labels_dir(config, root, workdir)
  params = fov2d.pair_table_params(**datasets.label_params(config))
  status = {}
  for city, query, database in cities:
    status[city] = cache_status(out_dir, city, params, labels_io.inputs_sha256(query, database),
                                {"num_queries": len(query), "num_database": len(database)})
  return status


def pose3d_label_status(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
  """{scene: status} of the 3-D overlap labels of a 6-DoF dataset (as `label_status`).

  Raises:
    DatasetError: some but not all frames have depth maps (labels.pose3d_use_depth).
  """
  from gcl_jax.labels import io as labels_io, pose3d
  from gcl_jax.train import datasets
  name, frames, _, poses = datasets.read_sixdof(config, poses=True)
  depth_paths = datasets._depth_paths(config, frames)  # pylint: disable=protected-access
  kwargs = datasets.pose3d_params(config, with_depths=depth_paths is not None)
  params = pose3d.pose_pair_table_params(kwargs.pop("intrinsics"),
                                         with_depths=depth_paths is not None, **kwargs)
  digest = labels_io.pose3d_inputs_sha256(poses, frames.keys, depth_paths)
  out_dir = datasets.labels_dir(config, config.data.root, workdir)
  return {name: cache_status(out_dir, name, params, digest,
                             {"num_queries": len(frames), "num_database": len(frames)},
                             kind="pose3d")}


def cache_status(out_dir: str, name: str, params: dict, digest: str, sizes: dict, *,
                 kind: str = "fov") -> str:
  """"cached" when `<out_dir>/<name>_<kind>.manifest.json` vouches for these params, inputs and
  sizes and its label file exists (the rule of gcl_jax.labels.io's cache, without loading the
  table); otherwise "computed on first use: <why>"."""
  from gcl_jax.labels import io as labels_io
  manifest_path = io.join(out_dir, f"{name}_{kind}.manifest.json")
  npz_path = io.join(out_dir, f"{name}_{kind}.npz")
  manifest_format = (labels_io.MANIFEST_FORMAT if kind == "fov"
                     else labels_io.POSE3D_MANIFEST_FORMAT)
  why = None
  try:
    manifest = io.read_json(manifest_path) if io.exists(manifest_path) else None
  except ValueError:
    manifest = {}
  if manifest is None:
    why = "no cached labels"
  elif not isinstance(manifest, dict) or manifest.get("format") != manifest_format or (
      manifest.get("format_version") != labels_io.MANIFEST_VERSION or manifest.get("city") != name):
    why = "unreadable manifest"
  elif manifest.get("params") != json.loads(json.dumps(params, sort_keys=True)):
    why = "cached with other config.labels parameters"
  elif manifest.get("inputs_sha256") != digest or any(manifest.get(k) != v
                                                        for k, v in sizes.items()):
    why = "the city's tables changed since"
  elif not io.exists(npz_path):
    why = f"{npz_path} is missing"
  return "cached" if why is None else f"computed on first use: {why}"


def check_dataset(config: ml_collections.ConfigDict, workdir: str | None, *,
                  num_workers: int | None = None, progress: bool = True,
                  open_image: Callable[[str], None] | None = None) -> check_lib.Report:
  """--mode=check_data: reads the configured dataset's tables and opens every image.

  The synthetic world (data.root empty) is not generated here: there is nothing to check.

  Args:
    config: the run's config (data.*, labels.*).
    workdir: the run's workdir (where a tfds run caches labels), or None.
    num_workers: threads that open images; default two per CPU core (at most 64).
    progress: show a progress bar.
    open_image: path -> None, raising when the image is bad (default: decode it with PIL).

  Returns:
    The report (problems named by file and reason; label status of the training cities).
  """
  from gcl_jax.data import check as check_lib
  fmt = config.data.format
  if fmt not in ("msls", "at_format", "sevenscenes", "json_index"):
    raise ConfigError("data.format", f"{fmt!r}: --mode=check_data scans files on disk "
                      "('msls', 'at_format', 'sevenscenes', 'json_index'); a TFDS dataset was "
                      "checked when it was prepared")
  if not config.data.root:
    raise ConfigError("data.root", "is empty: --mode=check_data checks a dataset on disk (the "
                      "synthetic world is generated by the run)")
  root = config.data.root
  report = check_lib.Report(root=root, format=fmt)
  tables = []
  if fmt == "msls":
    cities = [(c, "train_val") for c in config.data.train_cities]
    cities += [(c, config.data.eval_split) for c in config.data.val_cities
               if (c, config.data.eval_split) not in cities]
    train_tables = []
    for city, split in cities:
      sides = check_lib.check_msls_city(root, city, split, report)
      tables += [t for t in sides if t is not None]
      if city in config.data.train_cities and split == "train_val" and all(
          t is not None for t in sides):
        train_tables.append((city, *sides))
    if config.labels.kind == "fov":
      report.labels = label_status(config, root, workdir or ".", train_tables)
      missing = [c for c in config.data.train_cities if c not in report.labels]
      report.labels.update({c: "unreadable tables (see problems)" for c in missing})
  else:
    tables = check_lib.read_tables(report, lambda: _other_tables(config))
    if tables and fmt != "at_format" and config.labels.kind == "pose3d":
      try:
        report.labels = pose3d_label_status(config, workdir or ".")
      except (UserError, ValueError, OSError) as e:
        report.error(e)
  if num_workers is None:
    num_workers = min(64, 2 * (os.cpu_count() or 1))
  check_lib.check_images(tables, report, num_workers=num_workers, progress=progress,
                         open_image=open_image)
  return report


def _other_tables(config) -> list:
  from gcl_jax.train import datasets
  fmt, root = config.data.format, config.data.root
  if fmt == "at_format":
    from gcl_jax.data import at_format
    split = config.data.eval_split
    return [at_format.read_at_format(root, split, side) for side in ("queries", "database")]
  _, train_frames, eval_frames, _ = datasets.read_sixdof(config, poses=False)
  return [train_frames, eval_frames]

