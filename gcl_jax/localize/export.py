"""--mode=export: describe a mapped area's database images and write a place index directory.

    python main.py --mode=export --config=configs/demo.py --workdir=runs/demo \\
        --config.export.dir=runs/demo/index

The database images are those evaluation searches: the database side of config.data.val_cities on
config.data.eval_split (for 6-DoF scenes, the training frames), in that order, described with the
run's latest checkpoint (or config.model.init_checkpoint's weights when the run has none).

Extraction goes through `gcl_jax.evaluation.extract` (sharded over all devices and hosts) in
chunks of config.export.shard_size images; each chunk is written atomically by process 0 as
`<export.dir>/descriptors/<start>-<end>.npy` as soon as it is done, so an interrupted export,
rerun with the same command, describes only the chunks that are missing. The chunks are tied to
the model and preprocessing by `descriptors/fingerprint.json`: an export into a directory
described with another model, preprocessing or image list is refused, naming what differs.
Then the PCA-whitening (config.eval.pca_dim > 0, fitted as evaluation fits it) and the FAISS
index (config.export.index_type) are built and the directory is completed
(`gcl_jax.localize.index` documents the format).

This module does not import the training loop: `export` takes the run factory (gcl_jax.train's
`Run`) as an argument; `export_model` takes the network directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from tqdm import tqdm

from gcl_jax import io, parallel
from gcl_jax.evaluation import extract, pca as pca_lib
from gcl_jax.localize import index as index_lib
from gcl_jax.types import ImageTable

FINGERPRINT_FILE = "fingerprint.json"


def chunk_name(start: int, stop: int) -> str:
  """File name of the descriptors of image rows [start, stop)."""
  return f"{start:09d}-{stop:09d}.npy"


def chunk_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
  if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
    raise index_lib.LocalizeConfigError(
        f"config.export.shard_size must be a positive integer, got {shard_size!r}")
  return [(s, min(n, s + shard_size)) for s in range(0, n, shard_size)]


def database_images(database: Sequence[tuple[str, ImageTable]]) -> dict[str, np.ndarray]:
  """keys, paths (full), cities, utm and heading of the (name, table) databases, concatenated."""
  if not database:
    raise ValueError("no database images to export: config.data.val_cities is empty")
  tables = [t for _, t in database]
  return {"keys": np.concatenate([np.asarray(t.keys, str) for t in tables]),
          "paths": np.asarray([p for t in tables for p in t.full_paths()], str),
          "cities": np.concatenate([np.full(len(t), name, dtype=object)
                                    for name, t in database]).astype(str),
          "utm": np.concatenate([np.asarray(t.utm, np.float64).reshape(-1, 2) for t in tables]),
          "heading": np.concatenate([np.asarray(t.heading, np.float64) for t in tables])}


def _paths_digest(paths: Sequence[str]) -> str:
  import hashlib  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256()
  for p in paths:
    h.update(str(p).encode() + b"\0")
  return h.hexdigest()


def _check_or_write_fingerprint(desc_dir: str, record: dict) -> None:
  """Refuses chunks of another model / preprocessing / image list; writes the record (chief)."""
  path = io.join(desc_dir, FINGERPRINT_FILE)
  if io.exists(path):
    try:
      old = io.read_json(path)
    except ValueError as e:
      raise index_lib.IndexFormatError(f"{path}: not valid JSON ({e}); delete {desc_dir} to "
                                       "describe the images again") from e
    diff = index_lib.differences(old, record)
    if diff:
      raise index_lib.IndexMismatchError(
          f"{desc_dir} holds descriptors of another model, preprocessing or image list; use "
          "another config.export.dir or delete it:\n  " + "\n  ".join(diff))
    return
  if parallel.is_chief():
    io.write_json(path, record)


def _present(desc_dir: str, ranges: Sequence[tuple[int, int]]) -> np.ndarray:
  """Which chunks exist (decided by process 0 and shared, so every host skips the same ones)."""
  mask = np.array([io.exists(io.join(desc_dir, chunk_name(*r))) for r in ranges], np.int32)
  if jax.process_count() > 1:
    mask = np.asarray(multihost_utils.broadcast_one_to_all(mask))
  return mask.astype(bool)


def read_chunk(desc_dir: str, start: int, stop: int) -> np.ndarray:
  path = io.join(desc_dir, chunk_name(start, stop))
  import io as _io  # pylint: disable=g-import-not-at-top
  try:
    desc = np.load(_io.BytesIO(io.path(path).read_bytes()), allow_pickle=False)
  except Exception as e:  # pylint: disable=broad-except
    raise index_lib.IndexFormatError(f"{path}: unreadable descriptor chunk ({e}); delete it and "
                                     "rerun the export to describe those images again") from e
  if desc.ndim != 2 or desc.shape[0] != stop - start or desc.dtype != np.float32:
    raise index_lib.IndexFormatError(
        f"{path}: expected ({stop - start}, D) float32 descriptors of rows [{start}, {stop}), got "
        f"{desc.shape} {desc.dtype}; delete it and rerun the export")
  return desc


def describe_in_chunks(describe: Callable[[Sequence[str], str], np.ndarray], paths: Sequence[str],
                       desc_dir: str, shard_size: int) -> np.ndarray:
  """(N, D) descriptors of `paths`, computing only the chunks missing from `desc_dir`.

  Args:
    describe: describe(paths, what) -> descriptors (every host calls it with the same paths).
    paths: the database images, in order.
    desc_dir: where the chunks live (written by process 0).
    shard_size: images per chunk.
  """
  ranges = chunk_ranges(len(paths), shard_size)
  present = _present(desc_dir, ranges)
  todo = int((~present).sum())
  logging.info("describing %d images in %d chunks of %d (%d already done, %d to do) into %s",
               len(paths), len(ranges), shard_size, len(ranges) - todo, todo, desc_dir)
  bar = tqdm(total=len(paths), initial=int(sum(b - a for (a, b), p in zip(ranges, present) if p)),
             desc="export", unit="img", disable=not parallel.is_chief())
  try:
    for (start, stop), done in zip(ranges, present):
      if done:
        continue
      desc = np.asarray(describe(paths[start:stop], f"images {start}-{stop}"), np.float32)
      if desc.shape[0] != stop - start:
        raise ValueError(f"describe returned {desc.shape[0]} rows for {stop - start} images")
      if parallel.is_chief():
        io.atomic_write_with(io.join(desc_dir, chunk_name(start, stop)),
                             lambda f, d=desc: np.save(f, d, allow_pickle=False))
      bar.update(stop - start)
  finally:
    bar.close()
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("gcl_jax.localize.export chunks written")
  chunks = [read_chunk(desc_dir, a, b) for a, b in ranges]
  dims = {c.shape[1] for c in chunks}
  if len(dims) != 1:
    raise index_lib.IndexFormatError(f"{desc_dir}: chunks of different dimensions {sorted(dims)}")
  return np.concatenate(chunks)


def _whitening(config: ml_collections.ConfigDict, db_desc: np.ndarray, describe_table,
               fit_tables: Sequence[ImageTable]):
  """The PCA-whitening evaluation would learn (config.eval.pca_*), or None when pca_dim is 0."""
  e = config.eval
  if not e.pca_dim:
    return None
  if e.pca_fit == "eval_database":
    fit = db_desc
  else:
    from gcl_jax.evaluation import run as eval_run  # pylint: disable=g-import-not-at-top
    fit = eval_run.pca_fit_descriptors(config, [], describe_table, fit_tables)
  return pca_lib.learn_pca_whitening(fit, fit_set=e.pca_fit)


def export_model(config: ml_collections.ConfigDict, directory: str, *, mesh: jax.sharding.Mesh,
                 embed: Callable, params, model_state,
                 database: Sequence[tuple[str, ImageTable]],
                 step: int | None = None, checkpoint: str = "",
                 fit_tables: Sequence[ImageTable] = ()) -> dict:
  """Describes the `database` tables with the network and writes the index `directory`.

  Args:
    config: the run's config (its data, model, eval.pca_* and export sections).
    directory: the index directory (config.export.dir).
    mesh, embed, params, model_state: the network (embed as gcl_jax.train.step.make_embed_step).
    database: (name, table) of each database (the name is recorded as the images' city),
      concatenated in this order.
    step, checkpoint: where the weights come from (recorded in the manifest).
    fit_tables: training databases, the PCA fit set of config.eval.pca_fit="train".

  Returns:
    The manifest written.
  """
  t0 = time.time()
  e = config.export
  images = database_images(database)
  paths = images["paths"].tolist()
  weights = index_lib.weights_arrays(params, model_state)
  model = index_lib.model_record(config.model, index_lib.weights_sha256(weights))
  preprocessing = index_lib.preprocessing_record(config.data)
  desc_dir = io.join(directory, index_lib.DESCRIPTORS_DIR)
  _check_or_write_fingerprint(desc_dir, {
      "fingerprint": index_lib.fingerprint(model, preprocessing), "model": model,
      "preprocessing": preprocessing, "num_images": len(paths),
      "images_sha256": _paths_digest(paths), "shard_size": int(e.shard_size)})

  def describe(chunk_paths, what):
    return extract.extract_descriptors(embed, params, model_state, list(chunk_paths), config,
                                       mesh, desc=what)

  db_desc = describe_in_chunks(describe, paths, desc_dir, e.shard_size)
  whitening = _whitening(config, db_desc, lambda t, what: describe(t.full_paths(), what),
                         fit_tables)
  dim = int(config.eval.pca_dim) if whitening is not None else db_desc.shape[1]
  params_ = index_lib.index_params(
      e.index_type, len(paths), dim, nlist=e.ivf_nlist, nprobe=e.ivf_nprobe, hnsw_m=e.hnsw_m,
      ef_construction=e.hnsw_ef_construction, ef_search=e.hnsw_ef_search, pq_m=e.pq_m,
      pq_nbits=e.pq_nbits, train_size=e.ivf_train_size)
  manifest = None
  if parallel.is_chief():
    manifest = index_lib.write_index(
        directory, descriptors=db_desc, images=images, weights=weights,
        model_config=config.model, preprocessing=preprocessing, index_type=e.index_type,
        params=params_, pca=whitening, pca_dim=dim if whitening is not None else 0, step=step,
        checkpoint=checkpoint, seed=int(config.seed),
        extra={"split": config.data.eval_split, "cities": list(config.data.val_cities),
               "data_root": str(config.data.root), "shard_size": int(e.shard_size),
               "export_seconds": round(time.time() - t0, 2)})
    logging.info("index of %d images (%s, dim %d) written to %s in %.1f s", len(paths),
                 e.index_type, dim, directory, time.time() - t0)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("gcl_jax.localize.export index written")
  return manifest if manifest is not None else index_lib.read_manifest(directory)


def export(config: ml_collections.ConfigDict, workdir: str, make_run: Callable) -> dict:
  """--mode=export: the run in `workdir` (latest checkpoint, or config.model.init_checkpoint)
  describes its evaluation databases into config.export.dir.

  Args:
    config: the run's config.
    workdir: the training run's directory (checkpoints; the synthetic world when data.root is
      empty).
    make_run: make_run(config, workdir, train=False) -> an object with `mesh`, `embed` (after
      `create_state()`), `data.val`, `data.fit`, `ckpt` and `create_state()`: gcl_jax.train's Run.

  Returns:
    The manifest written.
  """
  if not config.export.dir:
    raise index_lib.LocalizeConfigError("--mode=export needs config.export.dir (where the index "
                                        "directory goes), e.g. --config.export.dir=runs/demo/index")
  run = make_run(config, workdir, train=False)
  latest = run.ckpt.latest_step()
  if latest is None and not config.model.init_checkpoint:
    raise FileNotFoundError(f"no checkpoint in {run.ckpt.directory} and no "
                            "config.model.init_checkpoint: train first (--mode=train) or give "
                            "weights to export")
  _, state, _ = run.create_state()
  step = int(jax.device_get(state.step))
  source = run.ckpt.directory if latest is not None else config.model.init_checkpoint
  logging.info("exporting with %s (step %d)", source, step)
  return export_model(config, config.export.dir, mesh=run.mesh, embed=run.embed,
                      params=state.params, model_state=state.model_state,
                      database=[(name, database) for name, _, database in run.data.val], step=step,
                      checkpoint=str(source), fit_tables=run.data.fit)

