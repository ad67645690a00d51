"""gcl-jax command line: parses flags and dispatches to the library.

Run as `python main.py`, `python -m gcl_jax` or `gcl-jax` (the installed console script);
all three run `run()` below.

  python main.py --config=configs/demo.py --workdir=runs/demo            # train + evaluate
  python main.py --config=configs/msls.py --config.data.root=/data/msls --workdir=runs/r50
  python main.py --mode=label --config=configs/msls.py --config.data.root=/data/msls
  python main.py --mode=check_data --config=configs/msls.py --config.data.root=/data/msls

The config is validated (gcl_jax/validate.py) before any data is generated or read. A user's
mistake prints one line `<prog>: error: ...` and exits with status 2 (--verbosity=1 or
GCL_JAX_TRACEBACK=1: its traceback); --mode=check_data exits with 1 when it found problems.
"""

import logging as std_logging
import os
import re
import sys

# Quiet TensorFlow's C++ start-up chatter; it is only used for input pipelines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

from gcl_jax import cli  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/demo.py[:preset].",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results (label mode: "
                    "where the picture goes, default the current directory).")
flags.DEFINE_enum("mode", "train", ["train", "label", "eval", "compare", "check_data", "export",
                                    "localize"],
                  "train: train and evaluate (resumes from workdir); label: compute graded "
                  "labels of the training cities; eval: evaluate the latest checkpoint; compare: "
                  "train every loss variant and seed of config.compare on one budget and "
                  "summarise them; check_data: open every table and image of the configured "
                  "dataset, report each problem (and <workdir>/check_data.json), exit 1 if any; "
                  "export: write a place index of the evaluation databases to "
                  "config.export.dir; localize: localize config.localize.images in "
                  "config.localize.index, results in workdir.")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "Multi-process start-up (jax.distributed.initialize): auto = when the "
                  "coordinator is named (flags below or $JAX_COORDINATOR_ADDRESS), or srun / "
                  "mpirun started several tasks; on = always, letting JAX find the cluster (Cloud "
                  "TPU pods); off = never.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a multi-process "
                    "launch by hand (with --num_processes and --process_id).")
flags.DEFINE_integer("num_processes", None, "Number of processes of a launch by hand.")
flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")
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
  from gcl_jax import parallel, validate
  # pylint: enable=g-import-not-at-top
  parallel.initialize_distributed(parallel.detect_launch(
      distributed=FLAGS.distributed, coordinator_address=FLAGS.coordinator_address,
      num_processes=FLAGS.num_processes, process_id=FLAGS.process_id))
  config = FLAGS.config
  validate.validate_config(config, FLAGS.mode)  # before any data is generated or read
  if FLAGS.mode == "check_data":
    return _check_data(config, FLAGS.workdir)
  from gcl_jax.train import compare, datasets, train  # pylint: disable=g-import-not-at-top
  if FLAGS.mode == "label":
    datasets.label(config, FLAGS.workdir or ".")
    return
  if not FLAGS.workdir:
    raise app.UsageError(f"--workdir is required for --mode={FLAGS.mode}")
  if FLAGS.mode == "train":
    train.train_and_evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == "compare":
    compare.compare(config, FLAGS.workdir)
  elif FLAGS.mode == "export":
    from gcl_jax.localize import export  # pylint: disable=g-import-not-at-top
    export.export(config, FLAGS.workdir, train.Run)
  elif FLAGS.mode == "localize":
    from gcl_jax.localize import localize  # pylint: disable=g-import-not-at-top
    localize.localize(config, FLAGS.workdir)
  else:
    train.evaluate_checkpoint(config, FLAGS.workdir)


def _check_data(config, workdir: str | None) -> int:
  """--mode=check_data: prints the report (and writes <workdir>/check_data.json); 1 on problems."""
  from gcl_jax import io, parallel, validate  # pylint: disable=g-import-not-at-top
  report = validate.check_dataset(config, workdir, progress=parallel.is_chief())
  print(report.summary())
  if workdir and parallel.is_chief():
    io.makedirs(workdir)
    io.write_json(io.join(workdir, "check_data.json"), report.to_dict())
  return 0 if report.ok else 1


# ---- one-line errors: a user's mistake (config, data, checkpoint) prints no traceback ---------

TRACEBACK_ENV = "GCL_JAX_TRACEBACK"  # =1: show the traceback of user errors (as --verbosity=1)


def _prog() -> str:
  return "python main.py" if os.path.basename(sys.argv[0]) == "main.py" else "gcl-jax"


def _traceback_wanted(argv=()) -> bool:
  """GCL_JAX_TRACEBACK=1, or --verbosity (-v) of 1 or more (also before flags are parsed)."""
  if os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0"):
    return True
  for arg in argv:
    m = re.fullmatch(r"--?(?:v|verbosity)=(-?\d+)", arg)
    if m:
      return int(m.group(1)) >= 1
  return FLAGS["verbosity"].present and logging.get_verbosity() >= 1


def _error(message: str) -> int:
  return cli.Command(_prog(), __doc__).error(str(message), 2)


def _config_arg(argv) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _flag_error(e: Exception, argv) -> str:
  """One line for a command line that does not parse: the override that names no key (with the
  closest one), the config file that does not load, or absl's own message."""
  from gcl_jax import validate  # pylint: disable=g-import-not-at-top
  arg = _config_arg(argv)
  if arg is not None and not os.path.exists(arg.split(":", 1)[0]):
    return f"--config={arg}: no such config file"
  if arg is not None:
    try:
      config = FLAGS["config"].parser.parse(arg)
      config.keys()  # a config file that failed to load raises only when read
    except Exception as load_error:  # pylint: disable=broad-except
      cause = load_error
      while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
      return f"--config={arg} does not load: {cause}"
    for a in argv:
      if a.startswith("--config."):
        message = validate.override_error(config, a[len("--config."):].split("=", 1)[0])
        if message:
          return f"{a}: {message}"
  return str(e)


def _installed_configs(argv: list[str]) -> list[str]:
  """argv with `--config=configs/x.py[:preset]` pointing at the installed `configs` package when
  no such file is relative to the current directory (a pip-installed gcl-jax run elsewhere)."""
  out = []
  for arg in argv:
    if arg.startswith("--config=configs/"):
      file, sep, preset = arg[len("--config="):].partition(":")
      if not os.path.exists(file):
        import configs  # pylint: disable=g-import-not-at-top
        installed = os.path.join(os.path.dirname(configs.__file__), file[len("configs/"):])
        if os.path.exists(installed):
          arg = f"--config={installed}{sep}{preset}"
    out.append(arg)
  return out


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every failure (bad flag, config file, override) one line."""
  argv = _installed_configs(argv)
  try:
    rest = FLAGS(argv)
    FLAGS.config.keys()  # a config file that failed to load raises only when read
  except Exception as e:  # pylint: disable=broad-except
    if _traceback_wanted(argv):
      raise
    sys.exit(_error(_flag_error(e, argv)))
  return rest


def _main(argv) -> int | None:
  from gcl_jax.types import UserError  # pylint: disable=g-import-not-at-top
  try:
    return main(argv)
  except (UserError, FileNotFoundError, app.UsageError) as e:
    if _traceback_wanted():
      raise
    return _error(e)


def run():
  """Entry point of `python main.py`, `python -m gcl_jax` and the `gcl-jax` console script.

  A user's error (gcl_jax.types.UserError: config, dataset, label file, checkpoint mismatch; a
  missing file; a bad command line) prints one line on stderr and exits with status 2;
  --verbosity=1 or GCL_JAX_TRACEBACK=1 shows its traceback.
  """
  logging.set_verbosity(logging.INFO)
  app.run(_main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
