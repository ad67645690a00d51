"""gcl-jax command line: parses flags and dispatches to the library.

  python main.py --config=configs/demo.py --workdir=runs/demo            # train + evaluate
  python main.py --config=configs/msls.py --config.data.root=/data/msls --workdir=runs/r50
  python main.py --mode=label --config=configs/msls.py --config.data.root=/data/msls
"""

import logging as std_logging
import os

# Quiet TensorFlow's C++ start-up chatter; it is only used for input pipelines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/demo.py[:preset].",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results (label mode: "
                    "where the picture goes, default the current directory).")
flags.DEFINE_enum("mode", "train", ["train", "label", "eval", "compare"],
                  "train: train and evaluate (resumes from workdir); label: compute graded "
                  "labels of the training cities; eval: evaluate the latest checkpoint; compare: "
                  "train every loss variant and seed of config.compare on one budget and "
                  "summarise them.")
flags.mark_flags_as_required(["config"])


class _QuietLibraries:
  """Drops INFO records of chatty libraries (orbax logs every file it writes)."""

  def filter(self, record) -> bool:
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # pylint: disable=g-import-not-at-top
  from gcl_jax import parallel
  from gcl_jax.train import compare, datasets, train
  # pylint: enable=g-import-not-at-top
  parallel.maybe_initialize_distributed()
  config = FLAGS.config
  if FLAGS.mode == "label":
    datasets.label(config, FLAGS.workdir or ".")
    return
  if not FLAGS.workdir:
    raise app.UsageError(f"--workdir is required for --mode={FLAGS.mode}")
  if FLAGS.mode == "train":
    train.train_and_evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == "compare":
    compare.compare(config, FLAGS.workdir)
  else:
    train.evaluate_checkpoint(config, FLAGS.workdir)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main)
