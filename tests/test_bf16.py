"""bfloat16 compute (config.model.dtype): parameters stay float32, descriptors stay close to
float32 (tolerance: cosine > 0.99 per descriptor and max abs < 2e-2 on unit-norm vectors)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import default
from gcl_jax.models import weights


@pytest.mark.parametrize("arch", ["resnet18", "vgg16"])
def test_bfloat16_descriptors_close_to_float32(arch, data_dir):
  cfg = default.get_config().model
  cfg.arch, cfg.width, cfg.dtype = arch, 8, "bfloat16"
  model = weights.load_torch_checkpoint(data_dir / f"torch_golden_{arch}.safetensors", cfg)
  assert {str(x.dtype) for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {"float32"}
  with np.load(data_dir / "torch_golden_io.npz") as f:
    images, ref = np.transpose(f["images"], (0, 2, 3, 1)), f[f"{arch}_desc"]
  assert model.features(jnp.asarray(images)).dtype == jnp.bfloat16
  desc = np.asarray(model(jnp.asarray(images)))
  assert desc.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)
  cos = np.sum(desc * ref, axis=1)
  assert np.all(cos > 0.99), cos
  assert np.max(np.abs(desc - ref)) < 2e-2
