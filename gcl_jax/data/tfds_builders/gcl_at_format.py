"""`gcl_at_format`: any dataset in the `@` file-name convention, one split per folder."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from gcl_jax.data import at_format
from gcl_jax.types import DatasetError
from gcl_jax.data.tfds_builders.common import table_examples, table_features


class GclAtFormat(tfds.core.GeneratorBasedBuilder):
  """Images named `@east@north@...@.jpg` (VPR-datasets-downloader layout)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Produce the dataset with https://github.com/gmberton/VPR-datasets-downloader (Pitts30k,
  Tokyo 24/7, St Lucia, ...) and pass the dataset folder, the one holding `images/`, as
  --manual_dir:

      <manual_dir>/images/{train,val,test}/{database,queries}/@east@north@...@.jpg

  Every folder found becomes a split named `<split>_<side>` (e.g. `test_queries`), rows in sorted
  file-name order. Build one data_dir per dataset (or rename the builder) to keep several.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="@-format VPR images, one example per image, sorted file-name order.",
        features=table_features(),
        homepage="https://github.com/gmberton/VPR-datasets-downloader",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = str(dl_manager.manual_dir).rstrip("/")
    splits = {}
    for split in at_format.SPLITS:
      for side in ("database", "queries"):
        if tf.io.gfile.isdir(f"{root}/images/{split}/{side}"):
          splits[f"{split}_{side}"] = self._generate_examples(root, split, side)
    if not splits:
      raise DatasetError(f"{root}: no images/{{train,val,test}}/{{database,queries}} folders")
    return splits

  def _generate_examples(self, root: str, split: str, side: str):
    table = at_format.read_at_format(root, split, side)
    name = root.rstrip("/").rsplit("/", 1)[-1]
    yield from table_examples(table, split=split, city=name, side=side)
