"""Descriptor extraction: identical results for any batch size and device count."""

import jax
import numpy as np
from PIL import Image

from configs import demo
from gcl_jax.evaluation import extract
from gcl_jax import parallel
from gcl_jax.train import state as state_lib, step as step_lib


def test_same_descriptors_for_any_batch_size_and_device_count(tmp_path):
  rng = np.random.default_rng(0)
  paths = []
  for i in range(13):  # not a multiple of any batch size below: the last batch is padded
    p = tmp_path / f"{i}.jpg"
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), np.uint8)).save(p)
    paths.append(str(p))
  config = demo.get_config()
  config.data.image_size = (24, 32)
  config.model.width, config.model.norm_groups = 8, 4
  results = []
  for devices, batch_size in ((1, 1), (1, 5), (8, 8), (8, 3), (8, 32)):
    mesh = parallel.make_mesh(devices)
    model_def, state, _ = state_lib.create_train_state(config, mesh)
    embed = step_lib.make_embed_step(model_def, mesh, config.data.mean, config.data.std)
    config.eval.batch_size = batch_size
    results.append(extract.extract_descriptors(embed, state.params, state.model_state, paths,
                                               config, mesh))
  assert results[0].shape == (13, 64)  # resnet18 at width 8: 8 x 8 channels
  np.testing.assert_allclose(np.linalg.norm(results[0], axis=1), 1.0, atol=1e-5)
  for r in results[1:]:
    np.testing.assert_allclose(r, results[0], atol=1e-5)
  assert len(jax.devices()) == 8
