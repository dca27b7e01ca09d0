"""The flags of `stepjepa sweep` and `stepjepa report`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from stepjepa.core.errors import UsageError
from stepjepa.core.layout import STEP_PAIRS
from stepjepa.core.modes import MODES
from stepjepa.flags import (
    apply_yaml,
    as_bools,
    as_list,
    check_finite_floats,
    check_seed,
    split_flags,
)
from stepjepa.flags import field_help as _help
from stepjepa.models import EMBEDDED_ALIAS

# The YAML types of the fields that are not lists (list fields take a scalar or a list).
YAML_SCALARS = {"train_file": str, "test_file": str, "model_name": str, "output_dir": str, "launcher": str,
                "train_args": str, "eval_args": str, "dry_run": bool, "max_examples": int, "no_probe": bool,
                "probe_file": str, "probe_args": str, "no_base": bool, "task": str, "jobs": int, "devices": str}


@dataclass
class SweepConfig:
    """Flags of `stepjepa sweep`: the grid, the data and model, and what is passed through to each run."""

    modes: list[str] = field(default_factory=lambda: list(MODES), metadata=_help(
        "Training modes: regular, llm_jepa (Text <-> Code), step_jepa. Regular runs once per seed "
        "(it ignores --lbd, --predictors and --losses)."))
    seeds: list[int] = field(default_factory=lambda: [82, 23, 37, 84, 4], metadata=_help(
        "Training seeds (default: the five of the original run.sh)."))
    lbd: list[float] = field(default_factory=lambda: [0.1], metadata=_help("JEPA loss weights (lambda)."))
    predictors: list[int] = field(default_factory=lambda: [0], metadata=_help("Numbers of predictor tokens K."))
    losses: list[str] = field(default_factory=lambda: ["cosine"], metadata=_help(
        "JEPA losses: cosine, l2, mse, infonce."))
    step_pairs: list[str] = field(default_factory=lambda: ["first"], metadata=_help(
        "Step-JEPA pairs: first, all, random (as `stepjepa train --step_pairs`); LLM-JEPA runs once."))
    target_stop_grad: list[str] = field(default_factory=lambda: ["false"], metadata=_help(
        "Stop the gradient through the target view: false, true, or both (`--target_stop_grad false true`)."))
    train_file: Optional[str] = field(default=None, metadata=_help("Chat JSONL training data (required)."))
    test_file: Optional[str] = field(default=None, metadata=_help(
        "Evaluation problems, GSM8K or chat JSONL (required)."))
    model_name: str = field(default=EMBEDDED_ALIAS, metadata=_help(
        "Model every run starts from (as `stepjepa train --model_name`)."))
    output_dir: str = field(default="./sweep", metadata=_help(
        "Holds one directory per run and ledger.jsonl, the finished runs' settings and results."))
    config: Optional[str] = field(default=None, metadata=_help(
        "YAML file of these flags (keys are flag names without --); a flag given a non-default value wins."))
    dry_run: bool = field(default=False, metadata=_help("List the runs and which are finished; run nothing."))
    launcher: str = field(default="", metadata=_help(
        "Command that starts training instead of `python`, e.g. 'torchrun --nproc_per_node 2' or "
        "'accelerate launch' (it is given `-m stepjepa train ...`)."))
    train_args: str = field(default="", metadata=_help(
        "Further `stepjepa train` flags for every run, one quoted string, e.g. '--max_steps 200 --lora' "
        "(write --train_args=--lora for a single flag)."))
    eval_args: str = field(default="", metadata=_help(
        "Further `stepjepa evaluate` flags for every run, e.g. '--max_new_tokens 256 --batch_size 32'."))
    max_examples: Optional[int] = field(default=None, metadata=_help("Evaluate on the first N test problems only."))
    no_probe: bool = field(default=False, metadata=_help(
        "Skip `stepjepa probe` (held-out alignment of the JEPA views) after each run's evaluation."))
    probe_file: Optional[str] = field(default=None, metadata=_help(
        "Chat JSONL the probe reads (default: --test_file, which must then be a chat file)."))
    probe_args: str = field(default="", metadata=_help(
        "Further `stepjepa probe` flags, e.g. '--max_examples 200' (the mode defaults to the sweep's first "
        "JEPA mode)."))
    no_base: bool = field(default=False, metadata=_help(
        "Skip evaluating (and probing) the untrained --model_name once as the `base` row."))
    task: Optional[str] = field(default=None, metadata=_help(
        "Evaluation task of every run (`stepjepa evaluate --task`): gsm8k, exact_match or regex; "
        "default: chosen from the test file's first row."))
    jobs: int = field(default=1, metadata=_help(
        "Runs at a time. Without --devices each child gets an equal share of the CPU cores (OMP_NUM_THREADS); "
        "parallel runs write their output to OUTPUT_DIR/logs/RUN.log."))
    devices: str = field(default="", metadata=_help(
        "GPUs, one run at a time on each: '0,1,2,3' (CUDA_VISIBLE_DEVICES per child; sets --jobs); join the "
        "GPUs of one run with '+' for a multi-GPU --launcher, e.g. '0+1,2+3' with 'torchrun --nproc_per_node 2'."))

    def __post_init__(self) -> None:
        if self.config:
            apply_yaml(self, Path(self.config), YAML_SCALARS)
        self.modes = as_list(self.modes, str, "modes")
        self.seeds = as_list(self.seeds, int, "seeds")
        self.lbd = as_list(self.lbd, float, "lbd")
        self.predictors = as_list(self.predictors, int, "predictors")
        self.losses = as_list(self.losses, str, "losses")
        self.step_pairs = as_list(self.step_pairs, str, "step_pairs")
        self.target_stop_grad = as_bools(self.target_stop_grad, "target_stop_grad")
        check_finite_floats(self)
        for seed in self.seeds:
            check_seed("seeds", seed)
        for name, allowed in (("modes", MODES), ("losses", tuple(LOSS_FLAGS)), ("step_pairs", STEP_PAIRS)):
            bad = [value for value in getattr(self, name) if value not in allowed]
            if bad:
                raise UsageError(f"--{name}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
        for name in ("modes", "seeds", "lbd", "predictors", "losses", "step_pairs", "target_stop_grad"):
            if not getattr(self, name):
                raise UsageError(f"--{name} needs at least one value")
        if any(value < 0 for value in self.lbd):
            raise UsageError(f"--lbd values must be >= 0, got {self.lbd}")
        if any(value < 0 for value in self.predictors):
            raise UsageError(f"--predictors values must be >= 0, got {self.predictors}")
        if self.max_examples is not None and self.max_examples < 1:
            raise UsageError(f"--max_examples must be at least 1, got {self.max_examples}")
        for name in ("train_file", "test_file"):
            if not getattr(self, name):
                raise UsageError(f"--{name} is required")
        for name, reserved in (("train_args", SWEEP_TRAIN_FLAGS), ("eval_args", SWEEP_EVAL_FLAGS),
                               ("probe_args", SWEEP_PROBE_FLAGS)):
            taken = sorted({word.split("=")[0] for word in split_flags(getattr(self, name), name)} & reserved)
            if taken:
                raise UsageError(f"--{name} may not set {', '.join(taken)}: the sweep sets it for each run")
        split_flags(self.launcher, "launcher")
        if self.jobs < 1:
            raise UsageError(f"--jobs must be >= 1, got {self.jobs}")
        slots = self.device_slots
        if slots and any(not slot or not all(part.strip() for part in slot.split(",")) for slot in slots):
            raise UsageError(f"--devices: expected GPU numbers like 0,1,2 or 0+1,2+3, got {self.devices!r}")
        if slots and self.jobs not in (1, len(slots)):
            raise UsageError(f"--jobs {self.jobs} and --devices {self.devices} disagree: one run per device slot")

    @property
    def device_slots(self) -> list[str]:
        """The CUDA_VISIBLE_DEVICES value of each parallel job ('0+1' -> '0,1')."""
        return [slot.strip().replace("+", ",") for slot in self.devices.split(",")] if self.devices.strip() else []

    @property
    def parallel_jobs(self) -> int:
        return len(self.device_slots) or self.jobs

    @property
    def probe_mode(self) -> str:
        """The views the probe measures: the sweep's first JEPA mode (Step-JEPA's when only regular runs)."""
        return next((mode for mode in self.modes if mode != "regular"), "step_jepa")

    def fixed_settings(self) -> dict[str, Any]:
        """What every run of this sweep shares; the ledger refuses runs made with other values."""
        return {
            "model_name": self.model_name,
            "train_file": self.train_file,
            "test_file": self.test_file,
            "train_args": split_flags(self.train_args, "train_args"),
            "eval_args": split_flags(self.eval_args, "eval_args"),
            "max_examples": self.max_examples,
            "task": self.task,
        }


@dataclass
class ReportConfig:
    """Flags of `stepjepa report RUNS_DIR`."""

    runs_dir: Optional[str] = field(default=None, metadata={"help": "A sweep's --output_dir (holding ledger.jsonl)."})
    output: Optional[str] = field(default=None, metadata={
        "help": "Markdown file to write (default RUNS_DIR/report.md); the plots go beside it as "
                "<stem>_losses.png and <stem>_accuracy.png."})

    def __post_init__(self) -> None:
        if not self.runs_dir:
            raise UsageError("RUNS_DIR (or --runs_dir) is required")

    @property
    def output_path(self) -> Path:
        return Path(self.output) if self.output else Path(self.runs_dir) / "report.md"


LOSS_FLAGS = {"cosine": [], "l2": ["--jepa_l2"], "mse": ["--jepa_mse"], "infonce": ["--infonce"]}


# Flags the sweep sets for every run; --train_args / --eval_args / --probe_args may not set them too.
SWEEP_TRAIN_FLAGS = {
    "--train_file", "--model_name", "--output_dir", "--seed", "--finetune_seed", "--regular", "--step_jepa",
    "--lbd", "--predictors", "--jepa_l2", "--jepa_mse", "--infonce", "--overwrite_output_dir",
    "--resume_from_checkpoint", "--step_pairs", "--target_stop_grad",
}

SWEEP_EVAL_FLAGS = {"--model_path", "--test_file", "--output_file", "--max_examples", "--compare", "--task"}

SWEEP_PROBE_FLAGS = {"--model_path", "--test_file", "--output_file"}


LEDGER = "ledger.jsonl"

BASE = "base"  # the run (and its mode) that evaluates the untrained model
