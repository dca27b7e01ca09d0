"""The command line: one dataclass per command, parsed by transformers' HfArgumentParser; errors are one line."""

from __future__ import annotations

import signal
import sys

from stepjepa.commands import COMMANDS, load, parse_config
from stepjepa.core.errors import UsageError


def run_command(command: str, argv: list[str], prog: str | None = None) -> int:
    """Parse, validate and run one command; bad input ends in one line on stderr and status 2.

    Bad input is a :class:`UsageError` (any other exception, a ValueError from inside torch or transformers
    included, is a bug and keeps its traceback) or an OSError (FileNotFoundError included).
    """
    prog = prog or f"stepjepa {command}"
    try:
        config = parse_config(command, argv, prog)
        return int(load(COMMANDS[command][1])(config) or 0)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A full disk, a path made read-only or removed meanwhile: the system's words and the file, one line.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # A second Ctrl-C during training, or one in a command without its own handler; a handler of SIGTERM
        # raises it too, as KeyboardInterrupt(signal number, what it stopped).
        signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
        what = f" {exc.args[1]}" if len(exc.args) > 1 else ""
        print(f"{prog}: interrupted{what}", file=sys.stderr)
        return 128 + signum


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: stepjepa COMMAND [flags]   (stepjepa COMMAND --help for its flags)\n\ncommands:")
        for name, (*_, text) in COMMANDS.items():
            print(f"  {name:<10} {text}")
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"stepjepa: error: unknown command {argv[0]!r}; one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return run_command(argv[0], argv[1:])
