"""train_and_evaluate: data -> labels -> (eval untrained) -> train -> eval. One entry per mode.

    results = train_and_evaluate(config, workdir)   # --mode=train (resumes from workdir)
    result = evaluate_checkpoint(config, workdir)   # --mode=eval
"""

from __future__ import annotations

import io as io_lib
import json
import os
import signal
import socket
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from gcl_jax import io, losses, parallel
from gcl_jax.data import stream as stream_lib
from gcl_jax.evaluation import baselines, extract, run as eval_run
from gcl_jax.models import build_model
from gcl_jax.train import checkpoint, datasets, state as state_lib, step as step_lib



def images_per_example(config: ml_collections.ConfigDict) -> int:
  """Images through the backward pass per training example: 2 per pair, 2 + N per triplet."""
  if losses.uses_mining(config.loss.name):
    return 2 + int(config.loss.mining.num_negatives)
  return 2


class Preemption:
  """SIGTERM -> a checkpoint at a step every process agrees on, then a clean exit.

  One process: a signal handler sets a flag that `reached(step)` reports after the step. Several
  processes: JAX's preemption sync manager (started by jax.distributed.initialize) takes the
  SIGTERM that reaches ANY process, and `reached(step)`, called after every step by every process,
  becomes true on all of them at the same step (jax.experimental.multihost_utils).
  """

  def __init__(self):
    self.multi_process = jax.process_count() > 1
    self._requested = False
    if self.multi_process:
      return  # the sync manager's own SIGTERM handler must stay in place
    try:
      signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. some notebooks)
      pass

  def _handle(self, signum, frame):
    del signum, frame
    self._requested = True

  def reached(self, step: int) -> bool:
    if self.multi_process:
      self._requested = multihost_utils.reached_preemption_sync_point(step)
    return self._requested


def _initial_model(config: ml_collections.ConfigDict, data: datasets.Data):
  """The model to start from; NetVLAD without imported weights is initialised by k-means of
  local features of (up to) 500 training database images."""
  model = state_lib.build_initial_model(config)
  if config.model.pool != "netvlad" or config.model.init_checkpoint or not data.train:
    return model
  from gcl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(config.seed)
  paths = np.concatenate([c.database.full_paths() for c in data.train])
  paths = paths[np.sort(rng.choice(len(paths), min(500, len(paths)), replace=False))]
  model.eval()
  options = {**stream_lib.pipeline_options(config), "normalize": True}
  model.init_netvlad(b["image"][b["mask"]] for b in pipeline.image_batches(
      list(paths), batch_size=config.eval.batch_size, **options))
  return model


class Run:
  """What the entries share: config, workdir, mesh, data, checkpoints, model, embed step."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, train: bool):
    self.config, self.workdir = config, workdir
    self.mesh = parallel.make_mesh()
    if train:
      if config.loss.name not in losses.LOSS_NAMES:
        raise ValueError(f"unknown config.loss.name {config.loss.name!r}; choose one of "
                         f"{list(losses.LOSS_NAMES)}")
      parallel.check_batch_size(config.train.batch_size, self.mesh, "config.train.batch_size")
    t_start = time.time()
    self.data = datasets.prepare_data(config, workdir, train=train)
    datasets.log_ready(self.data, t_start)
    self.ckpt = checkpoint.Checkpointer(workdir, config.train.checkpoint_every_steps,
                                        config.train.max_checkpoints_to_keep)

  def create_state(self, initial_model=None):
    """(model_def, state, tx); restored from the latest checkpoint when there is one."""
    resuming = self.ckpt.latest_step() is not None
    # A restored checkpoint overwrites every weight: only the structure is needed then.
    model = (build_model(self.config.model, seed=self.config.seed) if resuming
             else initial_model)
    model_def, state, tx = state_lib.create_train_state(self.config, self.mesh, model)
    if resuming:
      state = self.ckpt.restore(state)
      logging.info("resumed from %s at step %d", self.ckpt.directory, int(state.step))
    self.embed = step_lib.make_embed_step(model_def, self.mesh, self.config.data.mean,
                                          self.config.data.std)
    return model_def, state, tx

  def describe(self, state) -> eval_run.Describe:
    return eval_run.model_describer(self.config, self.mesh, self.embed, state.params,
                                    state.model_state, step=int(jax.device_get(state.step)),
                                    workdir=self.workdir, checkpoint_dir=self.ckpt.directory)

  def evaluate(self, describe) -> tuple[dict, list]:
    return eval_run.evaluate(self.config, self.data.val, describe, self.data.fit)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the whole job in `workdir` (resuming from its latest checkpoint); returns results."""
  t_start = time.time()
  io.makedirs(workdir)
  checkpoint.check_compatible_config(config, workdir)
  if parallel.is_chief():
    io.atomic_write(io.join(workdir, "config.json"), config.to_json_best_effort(indent=1))
  run = Run(config, workdir, train=True)
  initial = None if run.ckpt.latest_step() is not None else _initial_model(config, run.data)
  model_def, state, tx = run.create_state(initial)
  logging.info("parameters:\n%s", state_lib.parameter_overview(model_def, state))
  start_step = int(jax.device_get(state.step))

  results = eval_run.load_results(workdir)
  if config.eval.thumbnail_baseline and "thumbnail" not in results:
    size = tuple(config.eval.thumbnail_size)
    thumb = lambda table, what: baselines.thumbnail_descriptors(table.full_paths(), size)
    eval_run.record(config, workdir, results, "thumbnail", run.evaluate(thumb)[0])
  if config.eval.before_training and start_step == 0 and "untrained" not in results:
    eval_run.record(config, workdir, results, "untrained", run.evaluate(run.describe(state))[0])

  state = train(run, model_def, state, tx)
  if int(jax.device_get(state.step)) < config.train.num_steps:
    logging.warning("stopped at step %d before num_steps (preempted); rerun to resume",
                    int(state.step))
    return results
  if config.eval.after_training:
    trained, details = run.evaluate(run.describe(state))
    trained["step"] = int(jax.device_get(state.step))
    eval_run.record(config, workdir, results, "trained", trained, details)
  logging.info("done in %.1f s; results in %s", time.time() - t_start, workdir)
  return results


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Evaluates the latest checkpoint in `workdir` on the evaluation sets (mode=eval)."""
  run = Run(config, workdir, train=False)
  if run.ckpt.latest_step() is None:
    if not config.model.init_checkpoint:
      raise FileNotFoundError(f"no checkpoint in {run.ckpt.directory} and no "
                              "config.model.init_checkpoint: train first (--mode=train) or give "
                              "weights to evaluate")
    logging.info("no checkpoint in %s: evaluating the imported weights %s", run.ckpt.directory,
                 config.model.init_checkpoint)
  _, state, _ = run.create_state()
  result, details = run.evaluate(run.describe(state))
  result["step"] = int(jax.device_get(state.step))
  eval_run.log_result(f"checkpoint {result['step']}", result)
  if parallel.is_chief():
    name = f"eval_step{result['step']}_{config.eval.protocol}"
    io.write_json(io.join(workdir, f"{name}.json"), result)
    eval_run.write_reports(config, name, details, workdir)
  return result


def last_metrics(workdir: str) -> dict:
  """The last record of <workdir>/metrics.jsonl ({} if none): resumed runs continue its
  cumulative counts."""
  path = io.join(workdir, "metrics.jsonl")
  if not io.exists(path):
    return {}
  lines = io.read_text(path).strip().splitlines()
  return json.loads(lines[-1]) if lines else {}


class MetricsLog:
  """metrics.jsonl and TensorBoard scalars (process 0), a progress line (every process).

  Both files go through gcl_jax.io, so a workdir in a bucket receives them like a local one. The
  TensorBoard events are framed here rather than by tf.summary, whose tf.io.gfile is a second
  file-system client (one that, e.g., a storage emulator cannot serve): <workdir>/tensorboard/
  events.out.tfevents.<time>.<host>.<pid>.<n>.v2 holds TFRecord-framed Event protos, a file-version
  event then one event per record with a scalar summary per metric (as tf.summary.scalar writes
  them). Each record is appended; a bucket, which cannot append, gets the object rewritten, so a
  new file is begun once one passes `max_event_file_bytes`.
  """

  def __init__(self, workdir: str, max_event_file_bytes: int = 1 << 20):
    self.path = io.join(workdir, "metrics.jsonl")
    self.tb_dir = io.join(workdir, "tensorboard")
    self.chief = parallel.is_chief()
    self.max_event_file_bytes = max_event_file_bytes
    self.events_path, self._events_bytes, self._event_files = None, 0, 0

  def write(self, record: dict) -> None:
    if not self.chief:
      return
    io.append_text(self.path, json.dumps(record) + "\n")
    self._write_event(step=int(record["step"]), scalars={
        k: v for k, v in record.items()
        if k != "step" and isinstance(v, (int, float, np.number)) and not isinstance(v, bool)})

  def _write_event(self, step: int, scalars: dict) -> None:
    # pylint: disable=g-import-not-at-top
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.scalar import metadata
    from tensorboard.summary.writer.record_writer import RecordWriter
    from tensorboard.util import tensor_util
    # pylint: enable=g-import-not-at-top
    events = []
    if self.events_path is None or self._events_bytes >= self.max_event_file_bytes:
      self.events_path = io.join(
          self.tb_dir, f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}."
          f"{os.getpid()}.{self._event_files}.v2")
      self._events_bytes, self._event_files = 0, self._event_files + 1
      events.append(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
    summary = summary_pb2.Summary()
    for tag, value in scalars.items():
      summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(None, None),
                        tensor=tensor_util.make_tensor_proto(np.float32(value)))
    events.append(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    buf = io_lib.BytesIO()
    for event in events:
      RecordWriter(buf).write(event.SerializeToString())
    io.append_bytes(self.events_path, buf.getvalue())
    self._events_bytes += len(buf.getvalue())

  def close(self) -> None:
    """Nothing to release: every record is written when it is logged."""


def make_stream(run: Run, start_step: int, current: dict):
  """The training batches of config.loss.name from `start_step`: pairs, or mined triplets
  (mined with current["state"], the latest state, on the run's mesh)."""
  config = run.config
  where = dict(process_index=jax.process_index(), process_count=jax.process_count())
  if not losses.uses_mining(config.loss.name):
    return stream_lib.PairStream(config, run.data.train, start_step, **where)

  def embed(paths):
    state = current["state"]
    return extract.extract_descriptors(run.embed, state.params, state.model_state, paths,
                                       config, run.mesh, desc="mining")

  return stream_lib.TupleStream(config, run.data.train, start_step, embed=embed,
                                cache_dir=io.join(run.workdir, "mining"),
                                write=parallel.is_chief(), **where)


def train(run: Run, model_def, state, tx) -> state_lib.TrainState:
  """The training loop proper: logs metrics.jsonl, checkpoints, stops on NaN or SIGTERM."""
  config, ckpt, mesh = run.config, run.ckpt, run.mesh
  start_step = int(jax.device_get(state.step))
  num_steps = config.train.num_steps
  if start_step >= num_steps:
    return state
  train_step = step_lib.make_train_step(model_def, config, tx, mesh)
  schedule = state_lib.learning_rate_schedule(config.optimizer, num_steps)
  preemption = Preemption()
  log = MetricsLog(run.workdir)
  wall_offset = last_metrics(run.workdir).get("train_wall_s", 0.0) if start_step else 0.0
  log_every = max(int(config.train.log_every_steps), 1)
  current = {"state": state}  # the state that mines the next sub-cache (triplet)
  stream = make_stream(run, start_step, current)
  # Global batches built ahead in a thread while the step runs (not past a mining sub-cache).
  batches = stream_lib.prefetch_to_device(
      stream, mesh, config.data.prefetch_to_device if stream.can_run_ahead else 0)
  per_example = images_per_example(config)
  t_run = t_last = time.time()
  wait_time, checkpoint_time, pending = 0.0, 0.0, []
  step = start_step
  try:
    while step < num_steps:
      t0 = time.time()
      batch = next(batches)
      wait_time += time.time() - t0
      state, metrics = train_step(state, batch)
      current["state"] = state
      step += 1
      pending.append(metrics)
      if step % log_every == 0 or step == num_steps:
        _check_finite(pending, step, ckpt)
        values = {k: float(np.mean([jax.device_get(m[k]) for m in pending])) for k in pending[0]}
        dt = time.time() - t_last
        record = {"step": step, **values, "learning_rate": float(schedule(step - 1)),
                  "pairs_per_s": len(pending) * config.train.batch_size / dt,
                  "data_wait_s": wait_time, "checkpoint_s": checkpoint_time,
                  "images_backward": step * config.train.batch_size * per_example,
                  "images_forwarded_mining": stream.images_forwarded,
                  "train_wall_s": round(wall_offset + time.time() - t_run, 3),
                  "skipped_pairs": stream.skip_report.skipped}
        gem_p = _gem_p(state)
        if gem_p is not None:
          record["gem_p"] = gem_p
        eta = (num_steps - step) * dt / len(pending)
        logging.info("step %d/%d loss %.4f lr %.2g %.1f pairs/s (data wait %.1f s) ETA %.0f s",
                     step, num_steps, record["loss"], record["learning_rate"],
                     record["pairs_per_s"], wait_time, eta)
        log.write(record)
        pending, wait_time, checkpoint_time, t_last = [], 0.0, 0.0, time.time()
      preempted = preemption.reached(step)
      force = preempted or step == num_steps
      if force or ckpt.manager.should_save(step):
        _check_finite(pending, step, ckpt)
        t0 = time.time()
        ckpt.save(state, force=force)
        checkpoint_time += time.time() - t0
      if preempted:
        logging.warning("SIGTERM: checkpoint written at step %d, exiting", step)
        break
      if _eval_due(config, step):
        evaluate_along_the_way(run, state, images_backward=step * config.train.batch_size
                               * per_example, images_forwarded_mining=stream.images_forwarded)
  finally:
    batches.close()
    ckpt.wait()
    log.close()
  if stream.skip_report.skipped:
    logging.warning("%d training pairs skipped for unreadable images:\n  %s",
                    stream.skip_report.skipped, "\n  ".join(stream.skip_report.files))
  return state


def _eval_due(config: ml_collections.ConfigDict, step: int) -> bool:
  every = config.train.eval_every_steps
  return every > 0 and (step % every == 0 or step == config.train.num_steps)


def evaluate_along_the_way(run: Run, state, *, images_backward: int,
                           images_forwarded_mining: int) -> dict:
  """Evaluates the current state and appends it to <workdir>/eval_curve.jsonl (once per step)."""
  step = int(jax.device_get(state.step))
  result, _ = run.evaluate(run.describe(state))
  row = {"step": step, "images_backward": images_backward,
         "images_forwarded_mining": images_forwarded_mining,
         **{k: v for k, v in result.items() if k.startswith(("recall@", "map@"))}}
  eval_run.log_result(f"step {step}", result)
  if parallel.is_chief():
    io.append_text(io.join(run.workdir, "eval_curve.jsonl"), json.dumps(row) + "\n")
  return row


def read_eval_curve(workdir: str) -> list[dict]:
  """The rows of <workdir>/eval_curve.jsonl, one per step (a resumed run's repeats dropped)."""
  path = io.join(workdir, "eval_curve.jsonl")
  if not io.exists(path):
    return []
  rows = {}
  for line in io.read_text(path).splitlines():
    if line.strip():
      row = json.loads(line)
      rows[row["step"]] = row
  return [rows[s] for s in sorted(rows)]


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
