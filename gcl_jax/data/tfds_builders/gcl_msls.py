"""`gcl_msls`: Mapillary Street-Level Sequences, one split per city side (e.g. `cph_query`)."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from gcl_jax.data import msls, msls_test_cities
from gcl_jax.data.tfds_builders.common import table_examples, table_features


class GclMsls(tfds.core.GeneratorBasedBuilder):
  """MSLS images with the metadata the GCL labels and evaluation need."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download MSLS from https://www.mapillary.com/dataset/places (registration required), unpack it
  and pass the folder that holds `train_val/` (and optionally `test/`) as --manual_dir:

      <manual_dir>/train_val/<city>/{query,database}/{images/<key>.jpg, raw.csv,
                                                     postprocessed.csv, subtask_index.csv}
      <manual_dir>/test/<city>/{query,database}/{images/<key>.jpg, seq_info.csv,
                                                subtask_index.csv}

  Every city folder found becomes two splits, `<city>_query` and `<city>_database`, in CSV row
  order. Test cities have no coordinates (utm and heading are NaN).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="MSLS street-level images, one example per image, CSV row order.",
        features=table_features(),
        homepage="https://www.mapillary.com/dataset/places",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = str(dl_manager.manual_dir).rstrip("/")
    splits = {}
    for split in ("train_val", "test"):
      base = f"{root}/{split}"
      if not tf.io.gfile.isdir(base):
        continue
      for city in sorted(c.rstrip("/") for c in tf.io.gfile.listdir(base)):
        if not tf.io.gfile.isdir(f"{base}/{city}"):
          continue
        for side in ("query", "database"):
          splits[f"{city}_{side}"] = self._generate_examples(root, split, city, side)
    if not splits:
      raise msls.DatasetError(f"{root}: no MSLS city folders under train_val/ or test/")
    return splits

  def _generate_examples(self, root: str, split: str, city: str, side: str):
    if split == "test":
      table = msls_test_cities.read_msls_test_side(root, city, side)
    else:
      table = msls.read_msls_side(root, city, side, split)
    yield from table_examples(table, split=split, city=city, side=side)
