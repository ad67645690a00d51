"""Builds a GCL TFDS dataset without the `tfds` CLI.

The `tfds build` command of tensorflow-datasets 4.9.10 imports apache_beam at start-up (its
convert_format sub-command), which the project does not install; this does the same build:

    python -m gcl_jax.data.tfds_builders gcl_msls --manual_dir=/data/msls \
        --data_dir=gs://bucket/tfds

The one positional argument names the dataset: gcl_msls or gcl_at_format. Exit status: 0 on
success, 2 on a bad command line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

from gcl_jax import cli  # pylint: disable=g-import-not-at-top
from gcl_jax.data.tfds_builders import GclAtFormat, GclMsls  # pylint: disable=g-import-not-at-top

BUILDERS = {"gcl_msls": GclMsls, "gcl_at_format": GclAtFormat}

_CLI = cli.Command("python -m gcl_jax.data.tfds_builders", __doc__)


def _define_flags() -> flags.FlagValues:
  """The command line's flags, on their own FlagValues (other CLIs may share the process)."""
  fv = flags.FlagValues()
  flags.DEFINE_string("manual_dir", None, "local copy of the dataset", flag_values=fv,
                      required=True)
  flags.DEFINE_string("data_dir", None, "output folder (local or gs://)", flag_values=fv,
                      required=True)
  flags.DEFINE_string("file_format", "tfrecord",
                      "tfrecord (default; as_dataset() cannot read array_record)", flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Parses the arguments and builds the dataset.

  Args:
    argv: the arguments after the program name (default sys.argv[1:]).

  Returns:
    The exit status (see the module docstring).
  """
  fv = _define_flags()
  rest = _CLI.parse(fv, argv, positional=True)
  if isinstance(rest, int):
    return rest
  if len(rest) != 1 or rest[0] not in BUILDERS:
    got = f"got {' '.join(rest)!r}" if rest else "got none"
    return _CLI.error(f"expected one dataset name, one of {', '.join(sorted(BUILDERS))}; {got}", 2)
  builder = BUILDERS[rest[0]](data_dir=fv.data_dir, file_format=fv.file_format)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=fv.manual_dir))
  for name, split in builder.info.splits.items():
    print(f"{builder.name} {name}: {split.num_examples} examples")
  print(f"built {builder.data_dir}")
  return 0


if __name__ == "__main__":
  cli.run(main)
