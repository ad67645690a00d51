"""Evaluate a model under the configured protocol and write its reports: the evaluation entry.

`evaluate` scores the evaluation sets with any `describe(table, what) -> (N, D)` function (a
network through `model_describer`, or a baseline such as thumbnails); `record` adds a result to
`<workdir>/results.json` (the one writer of that file, through `report.write_results`) and writes
the per-query CSV, the prediction file and the pictures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from gcl_jax import io, parallel
from gcl_jax.evaluation import cache, extract, pca, protocols, report, visualize
from gcl_jax.types import ImageTable

EvalSet = tuple[str, ImageTable, ImageTable]  # (name, query table, database table)
Describe = Callable[[ImageTable, str], np.ndarray]


def evaluate(config: ml_collections.ConfigDict, val: Sequence[EvalSet], describe: Describe,
             fit_tables: Sequence[ImageTable] = ()) -> tuple[dict, list]:
  """Scores the evaluation sets under config.eval.protocol.

  Args:
    config: the run's config (its `eval` section).
    val: the evaluation sets (name, query, database).
    describe: describe(table, what) -> (N, D) descriptors of the table's images.
    fit_tables: training databases, the PCA-whitening fit set of eval.pca_fit="train".

  Returns:
    (result dict, per-city details) of gcl_jax.evaluation.protocols.evaluate_retrieval.
  """
  e = config.eval
  t0 = time.time()
  cities = [protocols.CityEval(query, database, describe(query, f"{name} queries"),
                               describe(database, f"{name} database"), name=name)
            for name, query, database in val]
  kwargs = {}
  if e.protocol == "gt_h5":
    if not e.gt_h5:
      raise ValueError("config.eval.protocol='gt_h5' needs config.eval.gt_h5=<path to *_gt.h5>")
    kwargs["sim"] = protocols.load_sim_h5(e.gt_h5)
  whitening = None
  if e.pca_dim:
    fit = pca_fit_descriptors(config, cities, describe, fit_tables)
    whitening = pca.learn_pca_whitening(fit, fit_set=e.pca_fit)
    cities = pca.whiten_cities(cities, whitening, e.pca_dim)
  result, details = protocols.evaluate_retrieval(cities, protocol=e.protocol, radius_m=e.radius_m,
                                                 ns=tuple(e.ns), **kwargs)
  if whitening is not None:
    result.update(whitening.describe(e.pca_dim))
  result["eval_seconds"] = round(time.time() - t0, 2)
  return result, details


def pca_fit_descriptors(config, cities, describe: Describe,
                        fit_tables: Sequence[ImageTable]) -> np.ndarray:
  """The descriptors PCA-whitening is fitted on (config.eval.pca_fit): the evaluation databases'
  (already in `cities`) or those of the training tables, described with `describe`."""
  e = config.eval
  if e.pca_fit == "eval_database":
    return np.concatenate([c.db_desc for c in cities])
  if e.pca_fit != "train":
    raise ValueError(f"config.eval.pca_fit must be 'train' or 'eval_database', got {e.pca_fit!r}")
  if not fit_tables:
    raise ValueError("config.eval.pca_fit='train' needs training cities "
                     "(config.data.train_cities); or use pca_fit='eval_database'")
  rng = np.random.default_rng(config.seed)
  fit = []
  for table in fit_tables:
    n = min(len(table), -(-e.pca_num_fit // len(fit_tables)))
    idx = np.sort(rng.choice(len(table), n, replace=False))
    fit.append(describe(table.subset(idx), f"{table.name} (PCA fit)"))
  return np.concatenate(fit)


# Config sections and keys that cannot change the descriptors of a given checkpoint step.
_NOT_IN_CACHE_KEY = ("eval", "train.log_every_steps", "train.checkpoint_every_steps",
                     "train.max_checkpoints_to_keep", "train.eval_every_steps", "compare")


def cache_extra(config: ml_collections.ConfigDict) -> dict:
  """What, besides the model config and the images, decides the descriptors of a training run's
  step: every config key except evaluation and logging settings."""
  plain = config.to_dict()
  for key in _NOT_IN_CACHE_KEY:
    section, _, leaf = key.partition(".")
    if leaf:
      plain.get(section, {}).pop(leaf, None)
    else:
      plain.pop(section, None)
  plain.pop("model", None)  # keyed on its own
  return plain


def model_describer(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, embed: Callable,
                    params, model_state, *, step: int, workdir: str,
                    checkpoint_dir: str | None) -> Describe:
  """describe(table, what) of a network's parameters, through `<workdir>/descriptors`.

  Args:
    embed: the jitted embed(params, model_state, images) of gcl_jax.train.step.make_embed_step.
    step: the training step of `params` (part of the cache key).
    checkpoint_dir: where the parameters come from (part of the cache key).
  """
  descriptor_cache = cache.DescriptorCache(io.join(workdir, "descriptors"))

  def describe(table: ImageTable, what: str) -> np.ndarray:
    def compute():
      return extract.extract_descriptors(embed, params, model_state, table.full_paths(), config,
                                         mesh, desc=what)
    if not config.eval.cache_descriptors:
      return compute()
    args = dict(checkpoint=checkpoint_dir, step=step, model_config=config.model,
                image_size=tuple(config.data.image_size), tables=[table],
                extra=cache_extra(config))
    desc, _ = descriptor_cache.get_or_compute(cache.cache_key(**args), compute,
                                              cache.cache_fields(**args), expected_rows=len(table),
                                              agree=parallel.agree, write=parallel.is_chief())
    return desc

  return describe


def load_results(workdir: str) -> dict:
  """The results recorded so far in `<workdir>/results.json` ({} when there are none)."""
  results_path = io.join(workdir, "results.json")
  return io.read_json(results_path) if io.exists(results_path) else {}


def record(config: ml_collections.ConfigDict, workdir: str, results: dict, name: str,
           result: dict, details: list | None = None) -> dict:
  """Adds `result` under `name` to `results` and writes results.json / results.md; with
  `details`, also `<name>_per_query.csv`, `<name>_predictions.txt`, retrievals.png and
  recall_curves.png. Only process 0 writes."""
  results[name] = result
  log_result(name, result)
  if not parallel.is_chief():
    return results
  report.write_results(workdir, results, ns=tuple(config.eval.ns))
  if details is not None:
    write_reports(config, name, details, workdir, picture="retrievals.png")
    visualize.plot_recall_curves(results, io.join(workdir, "recall_curves.png"))
  return results


def write_reports(config: ml_collections.ConfigDict, name: str, details: list,
                  workdir: str, picture: str | None = None) -> None:
  """Per-query CSV, MSLS-style prediction file and the retrievals picture (`picture`, default
  `<name>_retrievals.png`) of one evaluated model."""
  report.write_per_query_csv(io.join(workdir, f"{name}_per_query.csv"), details)
  report.write_predictions(io.join(workdir, f"{name}_predictions.txt"), details,
                           k=max(config.eval.ns))
  city = details[0]
  visualize.plot_retrievals(
      city.query_paths(), city.database_paths(), city.ranked, city.positives,
      io.join(workdir, picture or f"{name}_retrievals.png"),
      num_queries=config.eval.num_vis_queries, k=5,
      seed=config.seed)


def log_result(name: str, result: dict) -> None:
  recalls = " ".join(f"{k}={v:.1f}" for k, v in result.items() if k.startswith("recall@"))
  logging.info("%s: %s (%s, %d queries, %d database images)", name, recalls,
               result.get("protocol"), result.get("num_queries", -1), result.get("num_database", -1))
