"""Builds a GCL TFDS dataset without the `tfds` CLI.

The `tfds build` command of tensorflow-datasets 4.9.10 imports apache_beam at start-up (its
convert_format sub-command), which the project does not install; this does the same build:

    python -m gcl_jax.data.tfds_builders gcl_msls --manual_dir=/data/msls \
        --data_dir=gs://bucket/tfds
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

from gcl_jax.data.tfds_builders import GclAtFormat, GclMsls  # pylint: disable=g-import-not-at-top

BUILDERS = {"gcl_msls": GclMsls, "gcl_at_format": GclAtFormat}


def main(argv: list[str] | None = None) -> None:
  """Parses the arguments and builds the dataset."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("dataset", choices=sorted(BUILDERS))
  parser.add_argument("--manual_dir", required=True, help="local copy of the dataset")
  parser.add_argument("--data_dir", required=True, help="output folder (local or gs://)")
  parser.add_argument("--file_format", default="tfrecord",
                      help="tfrecord (default; as_dataset() cannot read array_record)")
  args = parser.parse_args(argv)
  builder = BUILDERS[args.dataset](data_dir=args.data_dir, file_format=args.file_format)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=args.manual_dir))
  for name, split in builder.info.splits.items():
    print(f"{builder.name} {name}: {split.num_examples} examples")
  print(f"built {builder.data_dir}")


if __name__ == "__main__":
  main()
