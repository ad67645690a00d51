"""Descriptor extraction over the device mesh of all hosts, with a padded last batch.

The result does not depend on the batch size or the number of devices or hosts: every image is
embedded independently (evaluation mode), each host reads its slice of every global batch, the
descriptors are gathered in order and the padding is dropped.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from gcl_jax.data import pipeline, stream
from gcl_jax import parallel


def extract_descriptors(embed: Callable, params, model_state, paths: Sequence[str],
                        config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                        desc: str = "extract") -> np.ndarray:
  """(N, D) float32 descriptors of the images at `paths`, in order, on every host."""
  n = len(paths)
  if n == 0:
    raise ValueError(f"{desc}: no images to describe")
  n_dev = mesh.devices.size
  batch_size = -(-config.eval.batch_size // n_dev) * n_dev
  num_batches = -(-n // batch_size)
  padded = np.asarray(list(paths) + [paths[0]] * (num_batches * batch_size - n), dtype=str)
  mine = pipeline.host_indices(len(padded), batch_size)
  batches = pipeline.image_batches(list(padded[mine]), batch_size=batch_size // jax.process_count(),
                                   **stream.pipeline_options(config))
  out = []
  for batch in tqdm(batches, total=num_batches, desc=desc, unit="batch", leave=False,
                    disable=jax.process_index() != 0):
    images = parallel.global_batch({"image": batch["image"]}, mesh)["image"]
    descriptors = embed(params, model_state, images)
    out.append(np.asarray(multihost_utils.process_allgather(descriptors, tiled=True)))
  return np.concatenate(out)[:n].astype(np.float32)
