"""configs/demo.py shrunk to a tiny world and a few steps: train + eval through main's code path,
then resume from the checkpoint."""

import itertools
import json

import numpy as np
import pytest

from configs import demo
from gcl_jax import losses, parallel, synthetic
from gcl_jax.data import stream as stream_lib
from gcl_jax.train import checkpoint, datasets, state as state_lib, step as step_lib, train


def tiny_demo_config(num_steps: int):
  c = demo.get_config()
  c.data.train_cities = ("synth_north",)
  c.data.val_cities = ("synth_val",)
  c.data.synthetic.image_height, c.data.synthetic.image_width = 32, 48
  c.data.image_size = (32, 48)
  with c.unlocked():  # shrink the generated world (fields of synthetic.WorldConfig)
    c.data.synthetic.streets_per_axis = (2, 2)
    c.data.synthetic.query_sequences = 2
  c.model.width = 8
  c.model.norm_groups = 4
  c.optimizer.warmup_steps = 1
  c.train.batch_size = 8
  c.train.num_steps = num_steps
  c.train.log_every_steps = 2
  c.train.checkpoint_every_steps = 2
  c.eval.batch_size = 16
  c.eval.num_vis_queries = 2
  return c


def loss_on_trained_pairs(config, workdir, num_steps: int, trained: bool) -> float:
  """Mean GCL loss of the pairs of the first `num_steps` training batches under the initial
  model or the latest checkpoint (descriptors in evaluation mode)."""
  mesh = parallel.make_mesh()
  model_def, state, _ = state_lib.create_train_state(config, mesh,
                                                     state_lib.build_initial_model(config))
  if trained:
    state = checkpoint.Checkpointer(str(workdir), 1).restore(state)
  embed = step_lib.make_embed_step(model_def, mesh, config.data.mean, config.data.std)
  describe = lambda x: embed(state.params, state.model_state,
                             parallel.global_batch({"x": x}, mesh)["x"])
  pairs = stream_lib.PairStream(config, datasets.prepare_data(config, str(workdir)).train, 0,
                                process_index=0, process_count=1)
  per_pair = [np.asarray(losses.gcl_loss(describe(b["im0"]), describe(b["im1"]), b["label"],
                                         config.loss.margin))
              for b in itertools.islice(pairs, num_steps)]
  return float(np.mean(np.concatenate(per_pair)))


@pytest.mark.slow
def test_demo_trains_evaluates_and_resumes(tmp_path):
  workdir = tmp_path / "run"
  results = train.train_and_evaluate(tiny_demo_config(4), str(workdir))
  assert set(results) == {"thumbnail", "untrained", "trained"}
  saved = json.loads((workdir / "results.json").read_text())
  for name in ("thumbnail", "untrained", "trained"):
    r = saved[name]
    for n in (1, 5, 10, 20):
      assert 0.0 <= r[f"recall@{n}"] <= 100.0
    assert r["recall@1"] <= r["recall@5"] <= r["recall@10"] <= r["recall@20"]
    assert r["protocol"] == "msls_per_city" and r["num_queries"] > 0 and r["num_database"] > 0
  assert saved["trained"]["step"] == 4
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [2, 4]
  assert all(np.isfinite(r["loss"]) for r in records)
  for name in ("retrievals.png", "recall_curves.png", "results.md"):
    assert (workdir / name).stat().st_size > 0
  untrained = saved["untrained"]

  # Same workdir, more steps: resumes at step 4 (the world and labels are reused, the untrained
  # result is kept) and continues to step 6.
  results = train.train_and_evaluate(tiny_demo_config(6), str(workdir))
  assert results["trained"]["step"] == 6
  assert results["untrained"] == untrained
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [2, 4, 6]

  # Training helps: the pairs it was trained on are better separated (a step that does not
  # update the parameters leaves the two losses equal).
  config = tiny_demo_config(6)
  before = loss_on_trained_pairs(config, workdir, 6, trained=False)
  after = loss_on_trained_pairs(config, workdir, 6, trained=True)
  print(f"GCL loss of the trained pairs: untrained {before:.5f}, trained {after:.5f}")
  assert after < 0.9 * before  # measured: 0.0300 -> 0.0242 (ratio 0.81)

  # --mode=eval on the same workdir, another protocol, PCA-whitening fitted on the database.
  config = tiny_demo_config(6)
  config.eval.protocol, config.eval.pca_dim, config.eval.pca_fit = "msls_official", 16, "eval_database"
  result = train.evaluate_checkpoint(config, str(workdir))
  assert result["step"] == 6 and result["protocol"] == "msls_official"
  assert result["pca_dim"] == 16 and result["pca_transductive"]
  name = "eval_step6_msls_official"
  assert json.loads((workdir / f"{name}.json").read_text())["recall@1"] == result["recall@1"]
  rows = (workdir / f"{name}_per_query.csv").read_text().splitlines()
  assert len(rows) == result["num_queries"] + 1  # header + one row per evaluated query
  assert len((workdir / f"{name}_predictions.txt").read_text().splitlines()) == len(rows) - 1
  assert (workdir / f"{name}_retrievals.png").stat().st_size > 0  # trained's picture is kept

  # --mode=label: a summary per training city and a picture.
  summary = datasets.label(config, str(workdir))
  assert summary["synth_north"]["pairs"] > 0
  assert list(workdir.glob("labels_synth_north_query*.png"))


@pytest.mark.slow
def test_training_from_tfds_matches_training_from_files(tmp_path):
  """The same world prepared as a TFDS dataset trains to the same losses, bit for bit."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from gcl_jax.data.tfds_builders import GclMsls  # pylint: disable=g-import-not-at-top

  def config(fmt):
    c = tiny_demo_config(3)
    c.data.root = str(tmp_path / "world")
    c.data.format = fmt
    c.data.tfds_data_dir = str(tmp_path / "tfds")
    c.train.log_every_steps = 1
    c.eval.before_training = c.eval.thumbnail_baseline = False
    return c

  world = config("msls").data
  synthetic.generate_world(world.root, synthetic.WorldConfig(
      train_cities=world.train_cities, val_cities=world.val_cities,
      **world.synthetic.to_dict()), progress=False)
  from_files = train.train_and_evaluate(config("msls"), str(tmp_path / "files"))
  GclMsls(data_dir=str(tmp_path / "tfds"), file_format="tfrecord").download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "world")))
  from_tfds = train.train_and_evaluate(config("tfds"), str(tmp_path / "tfds_run"))
  losses = lambda d: [json.loads(l)["loss"] for l in (tmp_path / d / "metrics.jsonl").open()]
  assert len(losses("files")) == 3
  assert losses("tfds_run") == losses("files")
  for n in (1, 5, 10, 20):
    assert from_tfds["trained"][f"recall@{n}"] == from_files["trained"][f"recall@{n}"]
