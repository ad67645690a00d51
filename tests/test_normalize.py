"""On-device normalization of uint8 batches: torch's float32 values bit for bit, so training and
extraction give the same numbers whichever side normalizes."""

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from gcl_jax.data import normalize
from gcl_jax.evaluation import extract
from gcl_jax import parallel
from gcl_jax.train import state as state_lib, step as step_lib
from tests.test_train_step import tiny_config

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torch_like(x):
  """ToTensor + Normalize as torch computes them: correctly rounded float32 divisions."""
  x = np.asarray(x, np.float32)
  return (x / np.float32(255) - np.array(MEAN, np.float32)) / np.array(STD, np.float32)


def test_lookup_table_is_torch_arithmetic_for_every_level():
  levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1)
  np.testing.assert_array_equal(normalize.lookup_table(MEAN, STD), torch_like(levels))
  images = np.random.default_rng(0).integers(0, 256, (4, 5, 7, 3), dtype=np.uint8)
  on_device = jax.jit(lambda x: normalize.normalize_on_device(x, MEAN, STD))(images)
  assert on_device.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(on_device), torch_like(images))
  np.testing.assert_array_equal(normalize.normalize_array(images, MEAN, STD), torch_like(images))
  # Plain arithmetic under jit may use reciprocal multiplications: only within 1 ulp.
  arithmetic = jax.jit(lambda x: (x.astype(jnp.float32) / 255.0 - jnp.array(MEAN))
                       / jnp.array(STD))(images)
  assert np.abs(np.asarray(arithmetic) - torch_like(images)).max() < 1e-6
  # Float batches (normalized on the host) pass through untouched.
  floats = torch_like(images)
  assert normalize.normalize_on_device(floats, MEAN, STD) is floats


def test_train_step_on_uint8_batches_equals_host_normalized_batches():
  config = tiny_config()
  rng = np.random.default_rng(1)
  raw = [{"im0": rng.integers(0, 256, (8, 32, 48, 3), dtype=np.uint8),
          "im1": rng.integers(0, 256, (8, 32, 48, 3), dtype=np.uint8),
          "label": rng.uniform(size=8).astype(np.float32)} for _ in range(3)]
  mesh = parallel.make_mesh(8)
  results = []
  for host_side in (False, True):
    model_def, state, tx = state_lib.create_train_state(config, mesh)
    step = step_lib.make_train_step(model_def, config, tx, mesh)
    losses = []
    for b in raw:
      if host_side:
        b = {**b, "im0": torch_like(b["im0"]), "im1": torch_like(b["im1"])}
      state, metrics = step(state, parallel.global_batch(b, mesh))
      losses.append(float(metrics["loss"]))
    results.append((losses, jax.device_get(state.params)))
  assert results[0][0] == results[1][0]
  assert results[0][0][0] != results[0][0][-1]
  jax.tree.map(np.testing.assert_array_equal, results[0][1], results[1][1])


def test_extraction_same_descriptors_whichever_side_normalizes(tmp_path):
  rng = np.random.default_rng(2)
  paths = []
  for i in range(5):
    p = tmp_path / f"{i}.jpg"
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), np.uint8)).save(p)
    paths.append(str(p))
  config = tiny_config()
  config.data.image_size, config.eval.batch_size = (24, 32), 8
  mesh = parallel.make_mesh(8)
  model_def, state, _ = state_lib.create_train_state(config, mesh)
  embed = step_lib.make_embed_step(model_def, mesh, config.data.mean, config.data.std)
  out = []
  for on_device in (True, False):
    config.data.normalize_on_device = on_device
    out.append(extract.extract_descriptors(embed, state.params, state.model_state, paths, config,
                                           mesh))
  np.testing.assert_array_equal(out[0], out[1])
