"""ToTensor + Normalize, (x / 255 - mean) / std in float32, bit-identical to torch on host or device.

torch divides the uint8 image by 255, subtracts the mean and divides by the std, each step a
correctly rounded float32 operation; `normalize_array` does the same in NumPy. Compilers do not:
Grappler and XLA turn divisions by constants into multiplications by reciprocals, 1 ulp (<= 7.2e-7)
off on most values. On the accelerator `normalize_on_device` therefore looks the values up: a
uint8 pixel takes 256 values per channel, so the (256, 3) table that `normalize_array` makes of
them gives torch's floats exactly on every backend, for one small gather (XLA CPU, 16 x 480 x 640
images: 25 ms, vs 19 ms for the inexact arithmetic and 81 ms for NumPy on the host).

Normalizing on device lets the input pipeline ship uint8 batches (`pair_batches(...,
normalize=False)`): 4x fewer bytes to the accelerator and no float work on the host CPUs, which
decode the JPEGs (config.data.normalize_on_device, on by default).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np


def normalize_array(image, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """(x / 255 - mean) / std in float32 NumPy, torch's arithmetic; works in place on one copy."""
  x = np.asarray(image).astype(np.float32)
  np.divide(x, np.float32(255.0), out=x)
  np.subtract(x, np.asarray(mean, np.float32), out=x)
  np.divide(x, np.asarray(std, np.float32), out=x)
  return x


def lookup_table(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """(256, C) float32: row v = `normalize_array` of the grey level v in every channel."""
  levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], len(mean), axis=1)
  return normalize_array(levels, mean, std)


def normalize_on_device(images: jnp.ndarray, mean: Sequence[float], std: Sequence[float]
                        ) -> jnp.ndarray:
  """uint8 (..., C) images -> float32, bit-identical to `normalize_array`; float input unchanged.

  For use inside jitted steps: float batches (normalized by the input pipeline) pass through, so
  the same step serves both `config.data.normalize_on_device` settings.
  """
  if images.dtype != jnp.uint8:
    return images
  table = jnp.asarray(lookup_table(mean, std))
  return table[images.astype(jnp.int32), jnp.arange(table.shape[1])]
