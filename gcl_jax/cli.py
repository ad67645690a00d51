"""What the project's absl command lines share: parsing, one-line errors, --help, `app.run`.

Each command line defines its flags on its own `flags.FlagValues` (several command lines may
share a process, e.g. in the tests) and has a `main(argv)` that returns the exit status:

    _CLI = cli.Command("python -m gcl_jax.labels", __doc__)

    def main(argv=None):
      fv = _define_flags()
      status = _CLI.parse(fv, argv)
      if isinstance(status, int):
        return status  # --help (0) or a bad command line (2), already reported.
      ...
      return _CLI.error("what went wrong", 1)

    if __name__ == "__main__":
      cli.run(main)

This module sits at the bottom of the layering: it imports only absl and the standard library.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence

from absl import app
from absl import flags

HELP_ARGS = frozenset({"-h", "-?", "--help", "-help", "--helpshort", "-helpshort",
                       "--helpfull", "-helpfull"})


@dataclasses.dataclass(frozen=True)
class Command:
  """One command line's name and help text.

  Attributes:
    prog: the name that starts every error line, e.g. "python -m gcl_jax.labels".
    doc: the text printed by --help above the flags (usually the module docstring).
  """

  prog: str
  doc: str

  def error(self, message: str, status: int) -> int:
    """Prints `message` as one line on stderr, `<prog>: error: <message>`.

    Args:
      message: the fault; line breaks and surrounding blanks are folded into single spaces.
      status: the exit status to return.

    Returns:
      `status`.
    """
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"{self.prog}: error: {line}", file=sys.stderr)
    return status

  def parse(self, fv: flags.FlagValues, argv: Sequence[str] | None, *,
            positional: bool = False, known_only: bool = False) -> list[str] | int:
    """Parses `argv` (default sys.argv[1:]) into `fv`.

    Args:
      fv: the command line's flags.
      argv: the arguments after the program name.
      positional: accept arguments that are not flags; otherwise any is a usage error.
      known_only: leave the flags `fv` does not define among the returned arguments instead of
        rejecting them (the caller checks them).

    Returns:
      The arguments left over (positional ones, and with `known_only` the unknown flags), or
      the exit status when there is nothing more to do: 0 after printing the help, 2 after
      printing a one-line error.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    head = argv[:argv.index("--")] if "--" in argv else argv
    if HELP_ARGS.intersection(head):
      print(f"{self.doc}\nflags:\n{fv.get_help(include_special_flags=False)}")
      return 0
    try:
      rest = fv([self.prog, *argv], known_only=known_only)[1:]
    except flags.Error as e:
      return self.error(f"{e} (see --help)", 2)
    if rest and not (positional or known_only):
      return self.error(f"unexpected arguments {rest} (every option is a --flag; see --help)", 2)
    return rest


def _app_flags(argv: list[str]) -> list[str]:
  """`app.run`'s flag parser: absl's own flags keep their defaults; `main` parses the rest."""
  flags.FLAGS(argv[:1])
  return argv[1:]


def run(main: Callable[[list[str]], int]) -> None:
  """Runs `main(argv_after_program_name)` under `app.run` and exits with its status."""
  app.run(main, flags_parser=_app_flags)
