"""Sharded train step: 8 fake CPU devices give the same loss and parameters as 1 device;
checkpoint round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from gcl_jax import parallel
from gcl_jax.train import checkpoint, state as state_lib, step as step_lib


def tiny_config(norm="group", optimizer="sgd"):
  c = demo.get_config()
  c.model.width, c.model.norm, c.model.norm_groups = 8, norm, 4
  c.optimizer.name, c.optimizer.learning_rate, c.optimizer.schedule = optimizer, 0.05, "constant"
  c.train.batch_size = 8
  return c


def batches(n=3, size=(32, 48)):
  rng = np.random.default_rng(0)
  return [{"im0": rng.normal(size=(8, *size, 3)).astype(np.float32),
           "im1": rng.normal(size=(8, *size, 3)).astype(np.float32),
           "label": rng.uniform(size=8).astype(np.float32)} for _ in range(n)]


def run(config, num_devices, data):
  mesh = parallel.make_mesh(num_devices)
  model_def, state, tx = state_lib.create_train_state(config, mesh)
  step = step_lib.make_train_step(model_def, config, tx, mesh)
  losses = []
  for b in data:
    state, metrics = step(state, parallel.global_batch(b, mesh))
    losses.append(float(metrics["loss"]))
  return losses, jax.device_get(state)


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_eight_devices_match_one_device(norm):
  assert len(jax.devices()) == 8
  config = tiny_config(norm)
  data = batches()
  losses1, state1 = run(config, 1, data)
  losses8, state8 = run(config, 8, data)
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
  assert losses1[0] != losses1[-1]  # parameters did change
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               state8.params, state1.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               state8.model_state, state1.model_state)
  assert int(state8.step) == 3


def test_batch_must_divide_devices():
  mesh = parallel.make_mesh(8)
  with pytest.raises(ValueError, match="multiple of the number of devices"):
    parallel.check_batch_size(12, mesh, "config.train.batch_size")


def test_checkpoint_round_trip(tmp_path):
  config = tiny_config("batch", optimizer="adam")
  mesh = parallel.make_mesh(8)
  model_def, state, tx = state_lib.create_train_state(config, mesh)
  step = step_lib.make_train_step(model_def, config, tx, mesh)
  for b in batches(2):
    state, _ = step(state, parallel.global_batch(b, mesh))
  ckpt = checkpoint.Checkpointer(str(tmp_path), every_steps=1)
  ckpt.save(state, force=True)
  ckpt.wait()
  assert ckpt.latest_step() == 2
  _, fresh, _ = state_lib.create_train_state(config, mesh)
  restored = checkpoint.Checkpointer(str(tmp_path), every_steps=1).restore(fresh)
  assert int(restored.step) == 2
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))
  # The restored state keeps training exactly like the original.
  b = parallel.global_batch(batches(1)[0], mesh)
  s1, m1 = step(restored, b)
  s2, m2 = step(state, b)
  assert float(m1["loss"]) == float(m2["loss"])


def test_checkpoint_of_another_model_is_refused(tmp_path):
  config = tiny_config("group")
  mesh = parallel.make_mesh(1)
  _, state, _ = state_lib.create_train_state(config, mesh)
  ckpt = checkpoint.Checkpointer(str(tmp_path), every_steps=1)
  ckpt.save(state, force=True)
  ckpt.wait()
  other = tiny_config("group")
  other.model.width = 16
  _, target, _ = state_lib.create_train_state(other, mesh)
  with pytest.raises(ValueError, match="does not match"):
    checkpoint.Checkpointer(str(tmp_path), every_steps=1).restore(target)


def test_gradient_accumulation_matches_full_batch():
  """1 device, 8 devices, and 8 devices accumulating 4 micro-batches: same parameters."""
  config = tiny_config("group")
  config.train.batch_size = 32
  data = [{k: np.concatenate([v] * 4) for k, v in b.items()} for b in batches(2, size=(16, 24))]
  losses1, state1 = run(config, 1, data)
  losses8, state8 = run(config, 8, data)
  config.train.grad_accum_steps = 4
  losses_acc, state_acc = run(config, 8, data)
  for losses, state in ((losses8, state8), (losses_acc, state_acc)):
    np.testing.assert_allclose(losses, losses1, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 state.params, state1.params)
  config.train.grad_accum_steps = 3
  with pytest.raises(ValueError, match="grad_accum_steps"):
    run(config, 8, data)
