"""train_and_evaluate: data -> labels -> (eval untrained) -> train -> eval. One entry per mode."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time

import jax
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from gcl_jax.data import at_format, files, msls, pairs as pairs_lib, pipeline
from gcl_jax.data.table import ImageTable
from gcl_jax.evaluation import baselines, cache, extract, pca, protocols, report, visualize
from gcl_jax.labels import io as labels_io
from gcl_jax.models import build_model
from gcl_jax.train import checkpoint, sharding, state as state_lib, step as step_lib


@dataclasses.dataclass
class Data:
  root: str
  train: list[pairs_lib.CityPairs]  # labelled training cities (empty when not training)
  val: list[tuple[str, ImageTable, ImageTable]]  # (name, query, database) evaluated
  fit: list[ImageTable]  # training databases: the default PCA-whitening fit set


def _is_chief() -> bool:
  return jax.process_index() == 0


def dataset_root(config: ml_collections.ConfigDict, workdir: str) -> str:
  """config.data.root, or the synthetic world generated (once) under <workdir>/data."""
  if config.data.root:
    return config.data.root
  from gcl_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  root = os.path.join(os.path.abspath(workdir), "data", "synthetic_msls")
  world = synthetic.WorldConfig(train_cities=tuple(config.data.train_cities),
                                val_cities=tuple(config.data.val_cities),
                                **config.data.synthetic.to_dict())
  return synthetic.generate_world(root, world, progress=_is_chief())


def label_params(config: ml_collections.ConfigDict) -> dict:
  lab = config.labels
  if lab.kind != "fov":
    raise ValueError(f"config.labels.kind {lab.kind!r} is not supported; use 'fov'")
  return dict(radius_m=lab.radius_m, fov_deg=lab.fov_deg, normalization=lab.normalization,
              cutoff_factor=lab.cutoff_factor, pos_dist_m=lab.pos_dist_m, neg_dist_m=lab.neg_dist_m)


def prepare_data(config: ml_collections.ConfigDict, workdir: str, *, train: bool = True) -> Data:
  """Reads the training and evaluation sets; labels the training cities (cached) if `train`."""
  fmt = config.data.format
  if fmt == "tfds":  # a dataset prepared once by python -m gcl_jax.data.tfds_builders gcl_msls
    from gcl_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
    source = tfds_source.TfdsSource(config.data.tfds_name, config.data.tfds_data_dir or None,
                                    cache_dir=config.data.tfds_cache_dir or None)
    files.register_source(source.root, source.read)  # image paths are tfds://... from now on
    root, read_city = source.root, source.city
    labels_dir = config.labels.dir or os.path.join(os.path.abspath(workdir), "labels")
  elif fmt in ("msls", "at_format"):
    root = dataset_root(config, workdir)
    read_city = lambda city, split="train_val": msls.read_msls_city(root, city, split)
    labels_dir = config.labels.dir or os.path.join(root, "labels")
  else:
    raise ValueError(f"unknown config.data.format {fmt!r}; choose 'msls', 'tfds' or 'at_format'")
  if fmt == "at_format":
    if train:
      raise ValueError("training reads MSLS-layout data (config.data.format='msls' or 'tfds'); "
                       "@-format datasets are for evaluation (--mode=eval)")
    split = config.data.eval_split
    return Data(root, [], [(split, at_format.read_at_format(root, split, "queries"),
                            at_format.read_at_format(root, split, "database"))], [])
  train_cities, fit = [], []
  for city in config.data.train_cities:
    if not (train or config.eval.pca_dim and config.eval.pca_fit == "train"):
      break
    query, database = read_city(city)
    fit.append(database)
    if train:
      table = labels_io.label_city_cached(query, database, labels_dir, city, **label_params(config))
      train_cities.append(pairs_lib.CityPairs(city, query, database, table))
  split = config.data.eval_split
  val = [(city, *read_city(city, split)) for city in config.data.val_cities]
  return Data(root, train_cities, val, fit)


def label(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """mode=label: labels every training city, prints a summary, draws one query's labels."""
  from gcl_jax.labels import dataset as label_dataset_lib, plot  # pylint: disable=g-import-not-at-top
  if config.data.format != "msls":
    raise ValueError("--mode=label reads an MSLS tree (config.data.format='msls'); training from "
                     "a TFDS dataset labels its cities on first use")
  root = dataset_root(config, workdir)
  labels_dir = config.labels.dir or os.path.join(root, "labels")
  summary = label_dataset_lib.label_dataset(root, list(config.data.train_cities), labels_dir,
                                            progress=_is_chief(), **label_params(config))
  print(label_dataset_lib.format_summary(summary))
  city = config.data.train_cities[0]
  query, database = msls.read_msls_city(root, city)
  table = labels_io.load_pair_table(summary[city]["label_file"])
  q = int(np.argmax(np.diff(table.indptr)))  # the query with the most labelled pairs
  out_png = os.path.join(workdir, f"labels_{city}_query{q}.png")
  os.makedirs(workdir, exist_ok=True)
  plot.plot_query_labels(query, database, table, q, out_png, radius_m=config.labels.radius_m,
                         fov_deg=config.labels.fov_deg)
  logging.info("labels in %s; picture of query %d of %s in %s", labels_dir, q, city, out_png)
  return summary


def pair_stream(config: ml_collections.ConfigDict, cities: list[pairs_lib.CityPairs],
                start_step: int):
  """Yields this host's batches from global step `start_step` on, epoch after epoch.

  Epoch e's pairs depend only on (seed, e), so restarting at any step reproduces the stream.
  """
  global_bs = config.train.batch_size
  local_bs = global_bs // jax.process_count()
  s = config.sampler
  epoch, steps_done = 0, 0
  while True:
    ep = pairs_lib.sample_epoch(
        cities, seed=config.seed, epoch=epoch, binary=config.loss.name == "contrastive",
        strata_probs=tuple(s.strata_probs), pos_threshold=s.pos_threshold,
        empty_stratum=s.empty_stratum, chunk_size=s.chunk_size)
    n_steps = len(ep) // global_bs
    if n_steps == 0:
      raise ValueError(f"epoch {epoch} has {len(ep)} pairs, fewer than one batch of {global_bs}: "
                       "add training cities or lower config.train.batch_size")
    if steps_done + n_steps > start_step:
      skip = max(0, start_step - steps_done)
      idx = pipeline.host_indices(n_steps * global_bs, global_bs)[skip * local_bs:]
      p0, p1 = ep.paths(cities)
      yield from pipeline.pair_batches(p0[idx], p1[idx], ep.label[idx], batch_size=local_bs,
                                       image_size=config.data.image_size, mean=config.data.mean,
                                       std=config.data.std,
                                       normalize=not config.data.normalize_on_device)
    steps_done += n_steps
    epoch += 1


def _subset(table: ImageTable, idx: np.ndarray) -> ImageTable:
  fields = {f.name: getattr(table, f.name) for f in dataclasses.fields(table)}
  for name, value in fields.items():
    if isinstance(value, np.ndarray):
      fields[name] = value[idx]
  return ImageTable(**fields)


def evaluate(config: ml_collections.ConfigDict, data: Data, describe) -> tuple[dict, list]:
  """Scores the evaluation sets under config.eval.protocol.

  Args:
    describe: describe(table, what) -> (N, D) descriptors of the table's images.

  Returns:
    (result dict, per-city details) of gcl_jax.evaluation.protocols.evaluate_retrieval.
  """
  e = config.eval
  t0 = time.time()
  cities = [protocols.CityEval(query, database, describe(query, f"{name} queries"),
                               describe(database, f"{name} database"), name=name)
            for name, query, database in data.val]
  kwargs = {}
  if e.protocol == "gt_h5":
    if not e.gt_h5:
      raise ValueError("config.eval.protocol='gt_h5' needs config.eval.gt_h5=<path to *_gt.h5>")
    kwargs["sim"] = protocols.load_sim_h5(e.gt_h5)
  whitening = None
  if e.pca_dim:
    if e.pca_fit == "eval_database":
      fit = np.concatenate([c.db_desc for c in cities])
    elif e.pca_fit == "train":
      if not data.fit:
        raise ValueError("config.eval.pca_fit='train' needs training cities "
                         "(config.data.train_cities); or use pca_fit='eval_database'")
      rng = np.random.default_rng(config.seed)
      fit = []
      for table in data.fit:
        n = min(len(table), -(-e.pca_num_fit // len(data.fit)))
        idx = np.sort(rng.choice(len(table), n, replace=False))
        fit.append(describe(_subset(table, idx), f"{table.name} (PCA fit)"))
      fit = np.concatenate(fit)
    else:
      raise ValueError(f"config.eval.pca_fit must be 'train' or 'eval_database', got {e.pca_fit!r}")
    whitening = pca.learn_pca_whitening(fit, fit_set=e.pca_fit)
    cities = pca.whiten_cities(cities, whitening, e.pca_dim)
  result, details = protocols.evaluate_retrieval(cities, protocol=e.protocol, radius_m=e.radius_m,
                                                 ns=tuple(e.ns), **kwargs)
  if whitening is not None:
    result.update(whitening.describe(e.pca_dim))
  result["eval_seconds"] = round(time.time() - t0, 2)
  return result, details


def _describer(config, mesh, embed, state, workdir: str, checkpoint_dir: str | None):
  """describe(table, what) of a model state, through the on-disk descriptor cache."""
  step = int(jax.device_get(state.step))
  descriptor_cache = cache.DescriptorCache(os.path.join(workdir, "descriptors"))

  def describe(table: ImageTable, what: str) -> np.ndarray:
    def compute():
      return extract.extract_descriptors(embed, state.params, state.model_state,
                                         table.full_paths(), config, mesh, desc=what)
    if not config.eval.cache_descriptors:
      return compute()
    args = dict(checkpoint=checkpoint_dir, step=step, model_config=config.model,
                image_size=tuple(config.data.image_size), tables=[table],
                extra={"mean": tuple(config.data.mean), "std": tuple(config.data.std),
                       # what led to the parameters of this step
                       "seed": config.seed, "optimizer": config.optimizer, "loss": config.loss,
                       "sampler": config.sampler, "labels": config.labels,
                       "train_cities": tuple(config.data.train_cities),
                       "batch_size": config.train.batch_size,
                       "grad_accum_steps": config.train.grad_accum_steps})
    desc, _ = descriptor_cache.get_or_compute(cache.cache_key(**args), compute,
                                              cache.cache_fields(**args), expected_rows=len(table))
    return desc

  return describe


def _initial_model(config: ml_collections.ConfigDict, data: Data):
  """The model to start from; NetVLAD without imported weights is initialised by k-means of
  local features of (up to) 500 training database images."""
  model = state_lib.build_initial_model(config)
  if config.model.pool != "netvlad" or config.model.init_checkpoint or not data.train:
    return model
  rng = np.random.default_rng(config.seed)
  paths = np.concatenate([c.database.full_paths() for c in data.train])
  paths = paths[np.sort(rng.choice(len(paths), min(500, len(paths)), replace=False))]
  model.eval()
  model.init_netvlad(b["image"][b["mask"]] for b in pipeline.image_batches(
      list(paths), batch_size=config.eval.batch_size, image_size=config.data.image_size,
      mean=config.data.mean, std=config.data.std))
  return model


def _write_reports(config, name: str, details: list, workdir: str) -> None:
  """Per-query CSV and MSLS-style prediction file of one evaluated model."""
  report.write_per_query_csv(os.path.join(workdir, f"{name}_per_query.csv"), details)
  report.write_predictions(os.path.join(workdir, f"{name}_predictions.txt"), details,
                           k=max(config.eval.ns))


# Config keys that determine the structure of the checkpointed state: a checkpoint written under
# other values cannot be restored. Everything else may change between restarts (and is logged).
STRUCTURAL_KEYS = ("model", "optimizer.name", "optimizer.momentum")


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def check_compatible_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses to resume a workdir whose checkpoints were written under an incompatible config."""
  path = os.path.join(workdir, "config.json")
  if not (os.path.exists(path) and os.path.isdir(os.path.join(workdir, "checkpoints"))
          and os.listdir(os.path.join(workdir, "checkpoints"))):
    return
  with open(path) as f:
    old = _flatten(json.load(f))
  new = _flatten(json.loads(config.to_json_best_effort()))
  changed = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
             if old.get(k) != new.get(k)}
  structural = {k: v for k, v in changed.items()
                if any(k == s or k.startswith(s + ".") for s in STRUCTURAL_KEYS)}
  if structural:
    lines = "\n".join(f"  {k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in structural.items())
    raise ValueError(f"{workdir} holds checkpoints of an incompatible config; use another "
                     f"--workdir or the same values:\n{lines}")
  for k, (a, b) in changed.items():
    logging.warning("resuming with %s changed: %r -> %r", k, a, b)


def _write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


class _Preemption:
  """Turns SIGTERM into a flag checked after every step."""

  def __init__(self):
    self.requested = False
    try:
      signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. some notebooks)
      pass

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the whole job in `workdir` (resuming from its latest checkpoint); returns results."""
  os.makedirs(workdir, exist_ok=True)
  t_start = time.time()
  check_compatible_config(config, workdir)
  if _is_chief():
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=1))
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.train.batch_size, mesh, "config.train.batch_size")
  data = prepare_data(config, workdir)
  logging.info("data ready in %.1f s: %d training cities, %d validation cities (root %s)",
               time.time() - t_start, len(data.train), len(data.val), data.root)

  ckpt = checkpoint.Checkpointer(workdir, config.train.checkpoint_every_steps,
                                 config.train.max_checkpoints_to_keep)
  resuming = ckpt.latest_step() is not None
  # A restored checkpoint overwrites every weight: only the structure is needed then.
  model_def, state, tx = state_lib.create_train_state(
      config, mesh, build_model(config.model, seed=config.seed) if resuming
      else _initial_model(config, data))
  logging.info("parameters:\n%s", state_lib.parameter_overview(model_def, state))
  if resuming:
    state = ckpt.restore(state)
    logging.info("resumed from %s at step %d", ckpt.directory, int(state.step))
  start_step = int(jax.device_get(state.step))

  embed = step_lib.make_embed_step(model_def, mesh, config.data.mean, config.data.std)
  describe_with = lambda st: _describer(config, mesh, embed, st, workdir, ckpt.directory)

  results_path = os.path.join(workdir, "results.json")
  results = {}
  if os.path.exists(results_path):
    with open(results_path) as f:
      results = json.load(f)
  if config.eval.thumbnail_baseline and "thumbnail" not in results:
    size = tuple(config.eval.thumbnail_size)
    thumb = lambda table, what: baselines.thumbnail_descriptors(table.full_paths(), size)
    results["thumbnail"], _ = evaluate(config, data, thumb)
    _log_result("thumbnail", results["thumbnail"])
  if config.eval.before_training and start_step == 0 and "untrained" not in results:
    results["untrained"], _ = evaluate(config, data, describe_with(state))
    _log_result("untrained", results["untrained"])
  if _is_chief():
    _write_json(results_path, results)

  state = train(config, workdir, data, model_def, state, tx, mesh, ckpt)
  if int(jax.device_get(state.step)) < config.train.num_steps:
    logging.warning("stopped at step %d before num_steps (preempted); rerun to resume",
                    int(state.step))
    return results

  if not config.eval.after_training:
    return results
  trained, details = evaluate(config, data, describe_with(state))
  trained["step"] = int(jax.device_get(state.step))
  results["trained"] = trained
  _log_result("trained", trained)
  if _is_chief():
    _write_json(results_path, results)
    with open(os.path.join(workdir, "results.md"), "w") as f:
      f.write(visualize.results_markdown(results, ns=tuple(config.eval.ns)))
    _draw(config, details, workdir)
    _write_reports(config, "trained", details, workdir)
    visualize.plot_recall_curves(results, os.path.join(workdir, "recall_curves.png"))
  logging.info("done in %.1f s; results in %s", time.time() - t_start, results_path)
  return results


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Evaluates the latest checkpoint in `workdir` on the validation cities (mode=eval)."""
  mesh = sharding.make_mesh()
  data = prepare_data(config, workdir, train=False)
  ckpt = checkpoint.Checkpointer(workdir, config.train.checkpoint_every_steps)
  if ckpt.latest_step() is not None:
    model_def, state, _ = state_lib.create_train_state(
        config, mesh, build_model(config.model, seed=config.seed))
    state = ckpt.restore(state)
  elif config.model.init_checkpoint:
    logging.info("no checkpoint in %s: evaluating the imported weights %s", ckpt.directory,
                 config.model.init_checkpoint)
    model_def, state, _ = state_lib.create_train_state(config, mesh)
  else:
    raise FileNotFoundError(f"no checkpoint in {ckpt.directory} and no "
                            "config.model.init_checkpoint: train first (--mode=train) or give "
                            "weights to evaluate")
  embed = step_lib.make_embed_step(model_def, mesh, config.data.mean, config.data.std)
  result, details = evaluate(config, data,
                             _describer(config, mesh, embed, state, workdir, ckpt.directory))
  result["step"] = int(jax.device_get(state.step))
  _log_result(f"checkpoint {result['step']}", result)
  if _is_chief():
    name = f"eval_step{result['step']}_{config.eval.protocol}"
    _write_json(os.path.join(workdir, f"{name}.json"), result)
    _write_reports(config, name, details, workdir)
    _draw(config, details, workdir)
  return result


def _draw(config, details: list, workdir: str) -> None:
  city = details[0]
  visualize.plot_retrievals(
      city.query_paths(), city.database_paths(), city.ranked, city.positives,
      os.path.join(workdir, "retrievals.png"), num_queries=config.eval.num_vis_queries, k=5,
      seed=config.seed)


def _log_result(name: str, result: dict) -> None:
  recalls = " ".join(f"{k}={v:.1f}" for k, v in result.items() if k.startswith("recall@"))
  logging.info("%s: %s (%s, %d queries, %d database images)", name, recalls,
               result.get("protocol"), result.get("num_queries", -1), result.get("num_database", -1))


def train(config, workdir, data: Data, model_def, state, tx, mesh, ckpt) -> state_lib.TrainState:
  """The training loop proper: logs metrics.jsonl, checkpoints, stops on NaN or SIGTERM."""
  start_step = int(jax.device_get(state.step))
  num_steps = config.train.num_steps
  if start_step >= num_steps:
    return state
  train_step = step_lib.make_train_step(model_def, config, tx, mesh)
  schedule = state_lib.learning_rate_schedule(config.optimizer, num_steps)
  preemption = _Preemption()
  tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard")) if _is_chief() else None
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  log_every = max(int(config.train.log_every_steps), 1)
  stream = pair_stream(config, data.train, start_step)
  t_last, wait_time, checkpoint_time, pending = time.time(), 0.0, 0.0, []
  step = start_step
  try:
    while step < num_steps:
      t0 = time.time()
      batch = sharding.global_batch(next(stream), mesh)
      wait_time += time.time() - t0
      state, metrics = train_step(state, batch)
      step += 1
      pending.append(metrics)
      if step % log_every == 0 or step == num_steps:
        _check_finite(pending, step, ckpt)
        values = {k: float(np.mean([jax.device_get(m[k]) for m in pending])) for k in pending[0]}
        dt = time.time() - t_last
        record = {"step": step, **values, "learning_rate": float(schedule(step - 1)),
                  "pairs_per_s": len(pending) * config.train.batch_size / dt,
                  "data_wait_s": wait_time, "checkpoint_s": checkpoint_time}
        gem_p = _gem_p(state)
        if gem_p is not None:
          record["gem_p"] = gem_p
        eta = (num_steps - step) * dt / len(pending)
        logging.info("step %d/%d loss %.4f lr %.2g %.1f pairs/s (data wait %.1f s) ETA %.0f s",
                     step, num_steps, record["loss"], record["learning_rate"],
                     record["pairs_per_s"], wait_time, eta)
        if _is_chief():
          with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
          with tb.as_default(step=step):
            for k, v in record.items():
              if k != "step":
                tf.summary.scalar(k, v)
        pending, wait_time, checkpoint_time, t_last = [], 0.0, 0.0, time.time()
      force = preemption.requested or step == num_steps
      if force or ckpt.manager.should_save(step):
        _check_finite(pending, step, ckpt)
        t0 = time.time()
        ckpt.save(state, force=force)
        checkpoint_time += time.time() - t0
      if preemption.requested:
        logging.warning("SIGTERM: checkpoint written at step %d, exiting", step)
        break
  finally:
    ckpt.wait()
    if tb is not None:
      tb.close()
  return state


def _check_finite(pending: list[dict], step: int, ckpt) -> None:
  losses = np.array([jax.device_get(m["loss"]) for m in pending])
  if not np.all(np.isfinite(losses)):
    bad = step - len(pending) + 1 + int(np.flatnonzero(~np.isfinite(losses))[0])
    raise FloatingPointError(
        f"loss is {losses[~np.isfinite(losses)][0]} at step {bad}: training stopped; the last good "
        f"checkpoint in {ckpt.directory} is intact (lower config.optimizer.learning_rate?)")


def _gem_p(state) -> float | None:
  for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
    if any(getattr(k, "key", None) == "pool" for k in path):
      return float(jax.device_get(leaf).reshape(-1)[0])
  return None
