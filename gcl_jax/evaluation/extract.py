"""Descriptor extraction over the device mesh with a padded, masked last batch.

The result does not depend on the batch size or the number of devices: every image is embedded
independently (evaluation mode) and padded rows are dropped by their mask.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from gcl_jax.data import pipeline
from gcl_jax.train import sharding


def extract_descriptors(embed: Callable, params, model_state, paths: Sequence[str],
                        config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                        desc: str = "extract") -> np.ndarray:
  """(N, D) float32 descriptors of the images at `paths`, in order."""
  n_dev = mesh.devices.size
  batch_size = -(-config.eval.batch_size // n_dev) * n_dev
  out = []
  batches = pipeline.image_batches(list(paths), batch_size=batch_size,
                                   image_size=config.data.image_size, mean=config.data.mean,
                                   std=config.data.std)
  total = -(-len(paths) // batch_size)
  for batch in tqdm(batches, total=total, desc=desc, unit="batch", leave=False,
                    disable=jax.process_index() != 0):
    images = sharding.global_batch({"image": batch["image"]}, mesh)["image"]
    desc_batch = np.asarray(jax.device_get(embed(params, model_state, images)))
    out.append(desc_batch[batch["mask"]])
  return np.concatenate(out).astype(np.float32)
