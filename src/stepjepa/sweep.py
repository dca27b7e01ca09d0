"""The `sweep` command: a resumable grid of train + evaluate runs, one directory and one ledger line per run."""

from __future__ import annotations

import json
import shlex
import signal
import sys
import time
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from stepjepa.commands import parse_config
from stepjepa.data import append_jsonl, read_jsonl
from stepjepa.errors import UsageError
from stepjepa.flags import check_finite_floats, check_seed
from stepjepa.flags import field_help as _help
from stepjepa.jobs import ChildRunner, Runner, job_environments, run_parallel
from stepjepa.layout import STEP_PAIRS
from stepjepa.ledger import BASE, LEDGER, read_ledger
from stepjepa.models import EMBEDDED_ALIAS
from stepjepa.modes import MODES

LOSS_FLAGS = {"cosine": [], "l2": ["--jepa_l2"], "mse": ["--jepa_mse"], "infonce": ["--infonce"]}
EVAL_OUTPUT = "eval.jsonl"
EVAL_SUMMARY = "eval_summary.json"
# Files a redone run must not inherit: the trainer appends to the metrics files and evaluate
# resumes from eval.jsonl, so stale rows of the interrupted attempt would mix with the new ones.
STALE_OUTPUTS = ("metrics.jsonl", "eval_metrics.jsonl", EVAL_OUTPUT, EVAL_SUMMARY, "train_summary.json")
# Flags the sweep sets for every run; --train_args / --eval_args may not set them too.
SWEEP_TRAIN_FLAGS = {
    "--train_file", "--model_name", "--output_dir", "--seed", "--finetune_seed", "--regular", "--step_jepa",
    "--lbd", "--predictors", "--jepa_l2", "--jepa_mse", "--infonce", "--overwrite_output_dir",
    "--resume_from_checkpoint", "--step_pairs", "--target_stop_grad",
}
SWEEP_EVAL_FLAGS = {"--model_path", "--test_file", "--output_file", "--max_examples", "--compare", "--task"}
SWEEP_PROBE_FLAGS = {"--model_path", "--test_file", "--output_file"}
PROBE_OUTPUT = "probe.json"
# The YAML types of the fields that are not lists (list fields take a scalar or a list).
YAML_SCALARS = {"train_file": str, "test_file": str, "model_name": str, "output_dir": str, "launcher": str,
                "train_args": str, "eval_args": str, "dry_run": bool, "max_examples": int, "no_probe": bool,
                "probe_file": str, "probe_args": str, "no_base": bool, "task": str, "jobs": int, "devices": str}
LOGS = "logs"  # parallel runs: each run's children write to logs/RUN.log instead of the terminal
# Exit statuses of a child stopped by Ctrl-C or SIGTERM -> the signal: the sweep stops too instead of going on.
INTERRUPTED = {130: signal.SIGINT, -signal.SIGINT: signal.SIGINT, 143: signal.SIGTERM, -signal.SIGTERM: signal.SIGTERM}



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
            self._apply_yaml(Path(self.config))
        self.modes = _unique(_as_list(self.modes, str, "modes"))
        self.seeds = _unique(_as_list(self.seeds, int, "seeds"))
        self.lbd = _unique(_as_list(self.lbd, float, "lbd"))
        self.predictors = _unique(_as_list(self.predictors, int, "predictors"))
        self.losses = _unique(_as_list(self.losses, str, "losses"))
        self.step_pairs = _unique(_as_list(self.step_pairs, str, "step_pairs"))
        self.target_stop_grad = _unique(_as_bools(self.target_stop_grad, "target_stop_grad"))
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
            taken = sorted({word.split("=")[0] for word in _split(getattr(self, name), name)} & reserved)
            if taken:
                raise UsageError(f"--{name} may not set {', '.join(taken)}: the sweep sets it for each run")
        _split(self.launcher, "launcher")
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

    def _apply_yaml(self, path: Path) -> None:
        """Fill the fields still at their defaults from a YAML mapping of flag names to values."""
        from stepjepa.extras import require

        require("yaml", "--config")
        import yaml

        if not path.is_file():
            raise UsageError(f"--config {path}: no such file")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
        except UnicodeDecodeError as exc:
            raise UsageError(f"--config {path}: not UTF-8 text (byte at offset {exc.start})") from None
        except yaml.YAMLError as exc:
            raise UsageError(f"--config {path}: not valid YAML ({exc})") from None
        if not isinstance(values, dict):
            raise UsageError(f"--config {path}: expected a mapping of flag names to values")
        known = {f.name: f for f in fields(self) if f.name != "config"}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UsageError(f"--config {path}: unknown keys {', '.join(map(str, unknown))}")
        for name, value in values.items():
            kind = YAML_SCALARS.get(name)
            if kind and not isinstance(value, kind):
                raise UsageError(f"--config {path}: {name} must be a {kind.__name__}, got {value!r}")
            if getattr(self, name) == _default(known[name]):
                setattr(self, name, value)

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
            "train_args": _split(self.train_args, "train_args"),
            "eval_args": _split(self.eval_args, "eval_args"),
            "max_examples": self.max_examples,
            "task": self.task,
        }


def _default(f) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _as_list(value: Any, kind: type, name: str) -> list:
    """A list of ``kind`` from a flag's list or a YAML scalar or list; bad items raise."""
    items = value if isinstance(value, list) else [value]
    try:
        return [kind(item) for item in items]
    except (TypeError, ValueError):
        raise UsageError(f"--{name}: expected {kind.__name__} values, got {value!r}") from None


def _as_bools(value: Any, name: str) -> list[bool]:
    """Booleans from flag words (true/false, yes/no, 1/0) or YAML booleans."""
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    items = value if isinstance(value, list) else [value]
    bad = [item for item in items if str(item).lower() not in words]
    if bad:
        raise UsageError(f"--{name}: expected true or false, got {', '.join(map(str, bad))}")
    return [words[str(item).lower()] for item in items]


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))


def _split(text: str, name: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"--{name}: {exc}") from None


@dataclass(frozen=True)
class Run:
    """One point of the grid; regular runs carry no lbd, predictors, loss or target setting, and only Step-JEPA
    runs carry step pairs."""

    mode: str
    seed: int
    lbd: float | None = None
    predictors: int | None = None
    loss: str | None = None
    step_pairs: str | None = None
    target_stop_grad: bool = False

    @property
    def config_name(self) -> str:
        """The settings without the seed: runs of one configuration differ only in their seed. The defaults
        (first pair, gradient through the target) add nothing, so older sweeps keep their names."""
        if self.mode in ("regular", BASE):
            return self.mode
        pairs = f"_{self.step_pairs}pairs" if self.step_pairs not in (None, "first") else ""
        stop = "_stopgrad" if self.target_stop_grad else ""
        return f"{self.mode}_lbd{self.lbd:g}_k{self.predictors}_{self.loss}{pairs}{stop}"

    @property
    def name(self) -> str:
        """The run's directory name, e.g. ``step_jepa_lbd0.1_k2_cosine_seed82`` (``base``: the untrained model)."""
        return BASE if self.mode == BASE else f"{self.config_name}_seed{self.seed}"

    def mode_flags(self) -> list[str]:
        """The `stepjepa train` flags that select this run's mode, lambda, K and loss."""
        if self.mode == "regular":
            return ["--regular"]
        flags = ["--step_jepa"] if self.mode == "step_jepa" else []
        flags += ["--lbd", f"{self.lbd:g}", "--predictors", str(self.predictors), *LOSS_FLAGS[self.loss]]
        if self.step_pairs not in (None, "first"):
            flags += ["--step_pairs", self.step_pairs]
        return flags + (["--target_stop_grad"] if self.target_stop_grad else [])


def plan_runs(cfg: SweepConfig) -> list[Run]:
    """The grid in order: per mode, per loss, lambda, K, step pairs (Step-JEPA only) and target stop-gradient,
    every seed; regular once per seed."""
    runs = []
    for mode in cfg.modes:
        if mode == "regular":
            runs += [Run("regular", seed) for seed in cfg.seeds]
            continue
        pair_modes = cfg.step_pairs if mode == "step_jepa" else [None]
        for loss in cfg.losses:
            for lbd in cfg.lbd:
                for k in cfg.predictors:
                    for pairs in pair_modes:
                        for stop in cfg.target_stop_grad:
                            runs += [Run(mode, seed, lbd, k, loss, pairs, stop) for seed in cfg.seeds]
    return runs


def train_command(cfg: SweepConfig, run: Run, run_dir: Path, overwrite: bool, resume: bool = False) -> list[str]:
    """The command line that trains one run (the launcher, or this Python, then `-m stepjepa train`)."""
    start = _split(cfg.launcher, "launcher") or [sys.executable]
    return [
        *start, "-m", "stepjepa", "train",
        "--train_file", str(cfg.train_file), "--model_name", cfg.model_name, "--output_dir", str(run_dir),
        "--seed", str(run.seed), *run.mode_flags(), *_split(cfg.train_args, "train_args"),
        *(["--overwrite_output_dir"] if overwrite and not resume else []),
        *(["--resume_from_checkpoint", "latest"] if resume else []),
    ]


def eval_command(cfg: SweepConfig, run_dir: Path, model: str | None = None) -> list[str]:
    """The command line that evaluates one trained run (or ``model``) into the run's directory."""
    limit = ["--max_examples", str(cfg.max_examples)] if cfg.max_examples else []
    limit += ["--task", cfg.task] if cfg.task else []
    return [
        sys.executable, "-m", "stepjepa", "evaluate",
        "--model_path", model or str(run_dir), "--test_file", str(cfg.test_file),
        "--output_file", str(run_dir / EVAL_OUTPUT), *limit, *_split(cfg.eval_args, "eval_args"),
    ]


def probe_command(cfg: SweepConfig, run_dir: Path, model: str | None = None) -> list[str]:
    """The command line that probes one trained run (or ``model``) on the probe file into the run's directory."""
    return [
        sys.executable, "-m", "stepjepa", "probe",
        "--model_path", model or str(run_dir), "--test_file", str(cfg.probe_file or cfg.test_file),
        "--output_file", str(run_dir / PROBE_OUTPUT), "--mode", cfg.probe_mode, "--debug", "0",
        *_split(cfg.probe_args, "probe_args"),
    ]


def check_commands(cfg: SweepConfig, run: Run, run_dir: Path) -> None:
    """Parse one run's train and evaluate flags now, so a bad pass-through flag fails before hours of runs."""
    commands = [("train", train_command(cfg, run, run_dir, False)), ("evaluate", eval_command(cfg, run_dir))]
    if not cfg.no_probe:
        commands.append(("probe", probe_command(cfg, run_dir)))
    for command, argv in commands:
        flags = argv[argv.index(command) + 1 :]
        try:
            parsed = parse_config(command, flags, prog=f"stepjepa sweep ({command} flags)")
        except ValueError as exc:
            raise UsageError(f"{command} flags of run {run.name}: {exc}") from None
        if command == "train" and parsed.debug >= 7:
            raise UsageError("--train_args sets --debug 7, which prints a batch and exits without training")


def check_ledger(ledger: dict[str, dict], cfg: SweepConfig, path: Path) -> None:
    """Refuse to add runs to a ledger whose runs were made with another model, data or pass-through flags."""
    fixed = cfg.fixed_settings()
    for name, entry in ledger.items():
        old = entry.get("fixed", {})
        for key, value in fixed.items():
            if old.get(key) != value:
                raise UsageError(
                    f"{path}: run {name} was made with {key}={old.get(key)!r}, this sweep has {value!r}; "
                    "pass another --output_dir"
                )


def run_status(output_dir: Path, run: Run, ledger: dict[str, dict]) -> str:
    """``done`` (ledger entry and evaluation present), ``redo`` (a directory left half-finished) or ``new``."""
    run_dir = output_dir / run.name
    if run.name in ledger and (run_dir / EVAL_SUMMARY).is_file() and (
            ledger[run.name].get("probe") is None or (run_dir / PROBE_OUTPUT).is_file()):
        return "done"
    return "redo" if run_dir.exists() else "new"


def check_probe_file(cfg: SweepConfig) -> None:
    """The probe needs chats (with steps): refuse a GSM8K-format probe file before any run starts."""
    path = Path(cfg.probe_file or cfg.test_file)
    if cfg.probe_file and not path.is_file():
        raise UsageError(f"--probe_file {path}: no such file")
    first = read_jsonl(path)[0]
    if not (isinstance(first[1], dict) and "messages" in first[1]):
        raise UsageError(f"{path}:{first[0]}: the probe needs a chat file ({{messages}}); pass --probe_file CHATS.jsonl "
                         "or --no_probe")


def has_whole_checkpoint(run_dir: Path) -> bool:
    """Whether training in ``run_dir`` can resume (a whole checkpoint is there)."""
    from stepjepa.checkpoints import latest_complete

    try:
        latest_complete(run_dir)
    except ValueError:
        return False
    return True


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


PROBE_KEYS = ("pairs", "gap", "top1", "top5", "matched_cosine", "mismatched_cosine", "effective_rank_a", "effective_rank_b")


def probe_scalars(probe: dict | None) -> dict[str, dict[str, float]] | None:
    """The probe summary's numbers per view (``k0``, ``k2``, ...), without the per-pair lists."""
    if probe is None:
        return None
    return {view: {key: values[key] for key in PROBE_KEYS} for view, values in probe["views"].items()}


def ledger_entry(cfg: SweepConfig, run: Run, train: dict, evaluation: dict, seconds: float,
                 probe: dict | None = None) -> dict[str, Any]:
    """One finished run: its settings, training outcome, accuracy and probe, and the settings all runs share."""
    return {
        "run": run.name,
        "config": run.config_name,
        "mode": run.mode,
        "seed": run.seed,
        "lbd": run.lbd,
        "predictors": run.predictors,
        "loss": run.loss,
        "step_pairs": run.step_pairs,
        "target_stop_grad": run.target_stop_grad,
        "accuracy": evaluation["accuracy"],
        "strict_accuracy": evaluation["strict_accuracy"],
        "correct": evaluation["correct"],
        "total_examples": evaluation["total_examples"],
        "task": evaluation.get("task", "gsm8k"),
        "probe": probe_scalars(probe),
        "train_loss": train.get("train_loss"),
        "global_step": train.get("global_step"),
        "train_runtime_s": train.get("runtime_s"),
        "run_seconds": round(seconds, 1),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fixed": cfg.fixed_settings(),
    }


def _run_step(runner: Runner, argv: list[str], output: Path, run: Run) -> tuple[int, dict | None]:
    """Run one child command and read the JSON it must write: ``(0, its content)`` or ``(status, None)``."""
    status = runner(argv)
    if status:
        return status, None
    value = _read_json(output)
    if value is None:
        print(f"stepjepa sweep: {run.name}: {argv[argv.index('stepjepa') + 1]} wrote no {output}", file=sys.stderr)
        return 1, None
    return 0, value


def execute_run(cfg: SweepConfig, run: Run, run_dir: Path, redo: bool, runner: Runner) -> tuple[int, dict | None]:
    """Train, evaluate and probe one run (the base model: evaluate and probe only): ``(0, ledger entry)``,
    or the failing step's exit status and None."""
    started = time.perf_counter()
    resume = redo and has_whole_checkpoint(run_dir)
    if redo:
        # A resumed run keeps its metrics (train trims them to the checkpoint) and, when its training had
        # finished, the evaluation and probe of that same model.
        finished = (run_dir / "train_summary.json").is_file()
        evaluated = (EVAL_OUTPUT, EVAL_SUMMARY, PROBE_OUTPUT)
        for name in (() if finished else evaluated) if resume else (*STALE_OUTPUTS, PROBE_OUTPUT):
            (run_dir / name).unlink(missing_ok=True)
    model = cfg.model_name if run.mode == BASE else None
    train: dict | None = {}
    if run.mode != BASE:
        status, train = _run_step(runner, train_command(cfg, run, run_dir, overwrite=redo, resume=resume),
                                  run_dir / "train_summary.json", run)
        if status:
            return status, None
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
    status, evaluation = _run_step(runner, eval_command(cfg, run_dir, model), run_dir / EVAL_SUMMARY, run)
    if status:
        return status, None
    probe = None
    if not cfg.no_probe:
        status, probe = _run_step(runner, probe_command(cfg, run_dir, model), run_dir / PROBE_OUTPUT, run)
        if status:
            return status, None
    return 0, ledger_entry(cfg, run, train, evaluation, time.perf_counter() - started, probe)


def run_sweep(cfg: SweepConfig, runner: Runner | None = None) -> int:
    """Run every unfinished run of the grid in turn; 0 when all are finished, 1 if any failed, 130 / 143 if
    interrupted by SIGINT / SIGTERM (passed on to the running child, which checkpoints; a rerun resumes it)."""
    runner = runner or ChildRunner()
    forward = getattr(runner, "forward", None)
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)} if forward else {}
    try:
        return _run_grid(cfg, runner)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_grid(cfg: SweepConfig, runner: Runner) -> int:
    for name in ("train_file", "test_file"):
        if not Path(getattr(cfg, name)).is_file():
            raise UsageError(f"--{name} {getattr(cfg, name)}: no such file")
    output_dir = Path(cfg.output_dir)
    ledger_path = output_dir / LEDGER
    ledger = read_ledger(ledger_path)
    check_ledger(ledger, cfg, ledger_path)
    if not cfg.no_probe:
        check_probe_file(cfg)
    runs = plan_runs(cfg)
    for run in {run.config_name: run for run in runs}.values():
        check_commands(cfg, run, output_dir / run.name)
    if not cfg.no_base:
        runs.insert(0, Run(BASE, 0))
    status = {run.name: run_status(output_dir, run, ledger) for run in runs}
    pending = [run for run in runs if status[run.name] != "done"]

    if cfg.dry_run:
        labels = {"done": "done", "redo": "redo (half-finished)", "new": "to run"}
        for run in runs:
            resumable = status[run.name] == "redo" and has_whole_checkpoint(output_dir / run.name)
            print(f"  {'resume (checkpoint)' if resumable else labels[status[run.name]]:<21} {run.name}")
        redo = sum(status[run.name] == "redo" for run in runs)
        print(f"{len(runs)} runs in {output_dir}: {len(runs) - len(pending)} done, {len(pending)} to run ({redo} redone)")
        first = next((run for run in pending if run.mode != BASE), None)
        if first:
            print("first run's commands:\n  " + shlex.join(train_command(cfg, first, output_dir / first.name, False)))
            print("  " + shlex.join(eval_command(cfg, output_dir / first.name)))
            if not cfg.no_probe:
                print("  " + shlex.join(probe_command(cfg, output_dir / first.name)))
        return 0

    output_dir.mkdir(parents=True, exist_ok=True)
    jobs = cfg.parallel_jobs
    outcome = (_run_parallel if jobs > 1 else _run_in_turn)(cfg, pending, status, runner, output_dir)
    if isinstance(outcome, int):
        return outcome
    failed = outcome
    print(f"sweep {output_dir}: {len(runs)} runs, {len(runs) - len(pending)} were done, "
          f"{len(pending) - len(failed)} ran now, {len(failed)} failed; ledger {ledger_path}; "
          f"report: stepjepa report {output_dir}")
    if failed:
        print(f"failed runs (run the same command again to retry them): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _record(cfg: SweepConfig, run: Run, code: int, entry: dict | None, label: str, received: int | None,
            failed: list[str], log: Path | None = None) -> None:
    """The parent's part after a run ends: the ledger line (the one writer) and what to say."""
    ledger_path = Path(cfg.output_dir) / LEDGER
    if entry is not None:
        append_jsonl(ledger_path, entry)
    if received:
        state = "finished" if entry else "unfinished (not in the ledger)"
        print(f"stepjepa sweep: interrupted by {signal.Signals(received).name} during {run.name}, which is "
              f"{state}; run the same command again to go on", file=sys.stderr)
    elif entry is None:
        print(f"stepjepa sweep: {run.name} failed (exit status {code}); the sweep goes on"
              + (f"; its output: {log}" if log else ""), file=sys.stderr)
        failed.append(run.name)
    else:
        print(f"{label} {run.name}: accuracy {100 * entry['accuracy']:.1f}% "
              f"(strict {100 * entry['strict_accuracy']:.1f}%) on {entry['total_examples']} problems, "
              f"{entry['run_seconds']:.0f}s", flush=True)


def _run_in_turn(cfg: SweepConfig, pending: list[Run], status: dict[str, str], runner: Runner,
                 output_dir: Path) -> list[str] | int:
    """One run after the other, children on this terminal: the failed runs, or the status of an interruption."""
    failed: list[str] = []
    for number, run in enumerate(pending, start=1):
        label = f"[{number}/{len(pending)}]"
        print(f"{label} {run.name}{' (redone)' if status[run.name] == 'redo' else ''}", flush=True)
        code, entry = execute_run(cfg, run, output_dir / run.name, status[run.name] == "redo", runner)
        received = getattr(runner, "signal", None) or INTERRUPTED.get(code)
        _record(cfg, run, code, entry, label, received, failed)
        if received:
            return 128 + received
    return failed


def _run_parallel(cfg: SweepConfig, pending: list[Run], status: dict[str, str], runner: Runner,
                  output_dir: Path) -> list[str] | int:
    """Up to ``--jobs`` runs at once, one job environment each, their output in ``logs/``; this thread alone
    writes the ledger. The failed runs, or the status of an interruption."""
    envs = job_environments(cfg.device_slots, cfg.parallel_jobs)
    (output_dir / LOGS).mkdir(exist_ok=True)
    failed: list[str] = []
    label = {run.name: f"[{number}/{len(pending)}]" for number, run in enumerate(pending, start=1)}

    def log(run: Run) -> Path:
        return output_dir / LOGS / f"{run.name}.log"

    def announce(run: Run, job: int) -> None:
        devices = f", CUDA_VISIBLE_DEVICES={envs[job]['CUDA_VISIBLE_DEVICES']}" if cfg.device_slots else ""
        print(f"{label[run.name]} {run.name}{' (redone)' if status[run.name] == 'redo' else ''} started "
              f"(job {job + 1}{devices}; output {log(run)})", flush=True)

    def work(run: Run, job: int) -> tuple[int, dict | None]:
        def job_runner(argv: list[str]) -> int:
            return runner(argv, env=envs[job], log=log(run))

        return execute_run(cfg, run, output_dir / run.name, status[run.name] == "redo", job_runner)

    def finish(run: Run, result: tuple[int, dict | None]) -> int | None:
        code, entry = result
        received = getattr(runner, "signal", None) or INTERRUPTED.get(code)
        _record(cfg, run, code, entry, label[run.name], received, failed, log(run))
        return received

    stopped, not_started = run_parallel(pending, work, finish, runner, cfg.parallel_jobs, announce)
    if stopped:
        if not_started:
            print(f"stepjepa sweep: {len(not_started)} runs not started after {signal.Signals(stopped).name}; run "
                  "the same command again to go on", file=sys.stderr)
        return 128 + stopped
    return failed
