"""The options guide's entry point: the same flags as `stepjepa train`, running the same code."""

import sys

from stepjepa.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("train", sys.argv[1:], prog="finetune_step_jepa_adapted.py"))
