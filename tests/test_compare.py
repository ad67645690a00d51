"""--mode=compare at a tiny size: runs, summary consistent with the runs, rerun, resume, errors."""

import json

import numpy as np
import pytest

from gcl_jax.train import compare, datasets, train

from test_end_to_end import tiny_demo_config


def tiny_compare_config(losses: str = "gcl,triplet", seeds: int = 2):
  c = tiny_demo_config(4)
  c.train.batch_size = 8
  c.eval.before_training = True
  c.loss.mining.cache_queries = 1000
  c.loss.mining.num_negative_samples = 60
  c.loss.mining.num_negatives = 2
  c.compare.losses = losses
  c.compare.seeds = seeds
  c.compare.budget_images = 128  # gcl: 8 steps of 8 pairs (16 images); triplet: 4 steps of 32
  c.compare.num_evals = 2
  return c


@pytest.mark.slow
def test_compare_end_to_end_rerun_and_resume(tmp_path):
  config = tiny_compare_config()
  workdir = tmp_path / "cmp"
  # Resume: the first triplet run was started before with fewer steps (as if interrupted).
  first = compare.run_config(config, "triplet", 0, datasets.dataset_root(config, str(workdir)))
  assert first.train.num_steps == 4 and first.train.eval_every_steps == 2
  with first.unlocked():
    first.train.num_steps = 2
  train.train_and_evaluate(first, str(workdir / "triplet_seed0"))

  summary = compare.compare(config, str(workdir))
  variants = summary["variants"]
  assert list(variants) == ["gcl", "triplet"]
  for name, variant in variants.items():
    assert [r["seed"] for r in variant["runs"]] == [0, 1]
    recalls = []
    for run in variant["runs"]:
      saved = json.loads((tmp_path / "cmp" / f"{name}_seed{run['seed']}" / "results.json")
                         .read_text())
      assert run["recall@1"] == saved["trained"]["recall@1"]
      assert run["images_backward"] == 128  # the same budget for every variant
      recalls.append(saved["trained"]["recall@1"])
      # evaluated along the way: untrained (0 images), step 2 and step 4
      assert [row["images_backward"] for row in run["curve"]] == [0, 64, 128]
    assert variant["recall@1"]["mean"] == pytest.approx(np.mean(recalls))
    assert variant["recall@1"]["std"] == pytest.approx(np.std(recalls, ddof=1))
  assert variants["gcl"]["runs"][0]["images_forwarded_mining"] == 0
  assert variants["triplet"]["runs"][0]["images_forwarded_mining"] > 0
  diff = variants["triplet"]["paired_diff"]["recall@5"]
  expected = [t["recall@5"] - g["recall@5"] for t, g in zip(variants["triplet"]["runs"],
                                                           variants["gcl"]["runs"])]
  assert diff["per_seed"] == pytest.approx(expected)
  assert diff["mean"] == pytest.approx(np.mean(expected))

  # The interrupted run resumed at step 2 instead of starting over: one record per logged step.
  resumed = tmp_path / "cmp" / "triplet_seed0" / "metrics.jsonl"
  assert [json.loads(line)["step"] for line in resumed.read_text().splitlines()] == [2, 4]

  md = (workdir / "compare.md").read_text()
  assert "| gcl |" in md and "| triplet − gcl |" in md
  assert (workdir / "compare.png").stat().st_size > 0
  assert json.loads((workdir / "compare.json").read_text())["budget_images"] == 128

  # Rerunning skips every finished run: nothing is trained again.
  before = {p: p.stat().st_mtime_ns for p in workdir.glob("*_seed*/metrics.jsonl")}
  again = compare.compare(config, str(workdir))
  assert {p: p.stat().st_mtime_ns for p in before} == before
  assert again["variants"]["gcl"]["recall@1"] == variants["gcl"]["recall@1"]


def test_misspelt_loss_fails_before_any_data(tmp_path):
  config = tiny_compare_config(losses="gcl,tripplet")
  with pytest.raises(ValueError, match="tripplet"):
    compare.compare(config, str(tmp_path / "cmp"))
  assert not (tmp_path / "cmp").exists()


def test_budget_gives_each_variant_its_steps():
  config = tiny_compare_config(losses="gcl,contrastive,triplet")
  config.compare.budget_images = 1000
  steps = {name: compare.run_config(config, name, 0, "/data").train.num_steps
           for name in compare.variant_names(config)}
  # 8 pairs x 2 images = 16 images per step; 8 tuples x (2 + 2) images = 32 per step
  assert steps == {"gcl": 62, "contrastive": 62, "triplet": 31}


@pytest.mark.slow
def test_triplet_resume_is_exact(tmp_path):
  """A triplet run stopped mid sub-cache and resumed gives the per-step losses of a run that was
  never stopped: the mined sub-caches are reloaded, not mined again with another model."""
  def config(num_steps):
    c = tiny_compare_config()
    c.loss.name = "triplet"
    c.train.num_steps = num_steps
    c.optimizer.schedule = "constant"  # the same learning rates whatever num_steps says
    c.train.log_every_steps = 1
    c.train.checkpoint_every_steps = 3
    c.eval.before_training = c.eval.after_training = c.eval.thumbnail_baseline = False
    c.data.root = str(tmp_path / "world")
    return c

  from gcl_jax import synthetic  # pylint: disable=g-import-not-at-top
  c = config(6)
  synthetic.generate_world(c.data.root, synthetic.WorldConfig(
      train_cities=tuple(c.data.train_cities), val_cities=tuple(c.data.val_cities),
      **c.data.synthetic.to_dict()), progress=False)

  def losses(workdir):
    return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text()
            .splitlines()]

  train.train_and_evaluate(config(6), str(tmp_path / "straight"))
  train.train_and_evaluate(config(3), str(tmp_path / "resumed"))
  assert (tmp_path / "resumed" / "mining" / "e0000_s00000.npz").exists()
  train.train_and_evaluate(config(6), str(tmp_path / "resumed"))
  assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
  straight = json.loads((tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()[-1])
  resumed = json.loads((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()[-1])
  assert resumed["images_forwarded_mining"] == straight["images_forwarded_mining"] > 0
