"""Features and example generation shared by the builders: one example per ImageTable row."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from gcl_jax.types import ImageTable


def table_features() -> tfds.features.FeaturesDict:
  """Per-image features (see the package docstring)."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3)),
      "key": tfds.features.Text(),
      "path": tfds.features.Text(),
      "split": tfds.features.Text(),
      "city": tfds.features.Text(),
      "side": tfds.features.Text(),
      "index": np.int64,
      # Raw bytes: tf.train.Example stores floats as float32, which would move a UTM northing of
      # ~5e6 m by up to 0.25 m (and change the labels).
      "utm": tfds.features.Tensor(shape=(2,), dtype=np.float64,
                                  encoding=tfds.features.Encoding.BYTES),
      "heading": tfds.features.Tensor(shape=(), dtype=np.float64,
                                      encoding=tfds.features.Encoding.BYTES),
      "pano": np.bool_,
      "night": np.bool_,
      "in_all": np.bool_,
  })


def table_examples(table: ImageTable, *, split: str, city: str, side: str
                   ) -> Iterator[tuple[str, dict]]:
  """(unique key, example) per row, in row order; the image is read from `table.root/path`."""
  for i, full in enumerate(table.full_paths()):
    yield f"{split}/{city}/{side}/{i:08d}", {
        "image": full,
        "key": str(table.keys[i]),
        "path": str(table.paths[i]),
        "split": split,
        "city": city,
        "side": side,
        "index": i,
        "utm": np.asarray(table.utm[i], np.float64),
        "heading": np.float64(table.heading[i]),
        "pano": bool(table.pano[i]),
        "night": bool(table.night[i]),
        "in_all": bool(table.in_all[i]),
    }
