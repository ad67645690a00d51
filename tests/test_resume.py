"""Fault tolerance on the tiny demo preset: exact resume after SIGKILL, checkpoint on SIGTERM,
NaN loss stops training with the last good checkpoint intact, incompatible configs refused."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from configs import demo
from gcl_jax import synthetic
from gcl_jax.train import checkpoint, train

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_WORLD = dict(train_cities=("synth_north",), val_cities=("synth_val",), image_height=32,
                  image_width=48, streets_per_axis=(2, 2), query_sequences=2,
                  train_query_sequences=4)


def resume_config(world_root: str, num_steps: int = 6):
  c = demo.get_config()
  c.data.root = world_root
  c.data.train_cities, c.data.val_cities = ("synth_north",), ("synth_val",)
  c.data.image_size = (32, 48)
  c.model.width, c.model.norm_groups = 8, 4
  c.optimizer.warmup_steps = 1
  c.train.batch_size = 8
  c.train.num_steps = num_steps
  c.train.log_every_steps = 1
  c.train.checkpoint_every_steps = 2
  c.eval.before_training = c.eval.thumbnail_baseline = c.eval.after_training = False
  return c


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("world") / "msls")
  return synthetic.generate_world(root, synthetic.WorldConfig(**TINY_WORLD), progress=False)


def losses(workdir) -> dict[int, float]:
  """step -> loss; a step logged twice (before a kill and after the restart) must agree."""
  out = {}
  for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines():
    r = json.loads(line)
    assert out.setdefault(r["step"], r["loss"]) == r["loss"], f"step {r['step']} differs"
  return out


def start_run(world: str, workdir, num_steps: int) -> subprocess.Popen:
  script = (f"import sys; sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'tests')!r}]\n"
            "import conftest\n"  # same XLA device setup as the tests
            "from test_resume import resume_config\n"
            "from gcl_jax.train import train\n"
            f"train.train_and_evaluate(resume_config({world!r}, {num_steps}), {str(workdir)!r})\n")
  return subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_steps(workdir, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
  path = pathlib.Path(workdir) / "metrics.jsonl"
  deadline = time.time() + timeout
  while time.time() < deadline:
    if path.exists() and len(path.read_text().splitlines()) >= n:
      return
    if proc.poll() is not None:
      raise AssertionError(f"run ended early: {proc.stderr.read().decode()[-2000:]}")
    time.sleep(0.2)
  raise AssertionError(f"no {n} steps logged in {timeout} s")


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_losses(world, tmp_path):
  reference = tmp_path / "reference"
  train.train_and_evaluate(resume_config(world, 8), str(reference))
  expected = losses(reference)
  assert sorted(expected) == list(range(1, 9))

  killed = tmp_path / "killed"
  proc = start_run(world, killed, 8)
  wait_for_steps(killed, 5, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  before = losses(killed)
  assert 5 <= max(before) < 8, "the run was not interrupted"
  restart = checkpoint.Checkpointer(str(killed), 2).latest_step()
  assert restart is not None and restart <= max(before)

  train.train_and_evaluate(resume_config(world, 8), str(killed))
  assert losses(killed) == expected  # bitwise equal, including the steps redone after restart


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits(world, tmp_path):
  workdir = tmp_path / "run"
  proc = start_run(world, workdir, 1000)
  wait_for_steps(workdir, 3, proc)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0
  last_logged = max(losses(workdir))
  saved = checkpoint.Checkpointer(str(workdir), 2).latest_step()
  assert saved is not None and saved >= last_logged and saved < 1000


def test_nan_loss_stops_with_the_last_checkpoint_intact(world, tmp_path):
  train.train_and_evaluate(resume_config(world, 2), str(tmp_path))
  config = resume_config(world, 6)
  config.loss.margin = float("nan")
  with pytest.raises(FloatingPointError, match="step 3"):
    train.train_and_evaluate(config, str(tmp_path))
  assert checkpoint.Checkpointer(str(tmp_path), 2).latest_step() == 2


def test_incompatible_checkpoint_is_refused(world, tmp_path):
  train.train_and_evaluate(resume_config(world, 2), str(tmp_path))
  config = resume_config(world, 4)
  config.model.width = 16
  with pytest.raises(ValueError, match=r"model\.width: checkpoint 8, now 16"):
    train.train_and_evaluate(config, str(tmp_path))
