"""The `train` command: configuration, data, model, Trainer, and the saved outputs."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from stepjepa.attention import ATTN_IMPLEMENTATIONS
from stepjepa.flags import check_finite_floats, check_seed
from stepjepa.flags import field_help as _help
from stepjepa.layout import STEP_PAIRS
from stepjepa.losses import INFONCE_TEMPERATURE
from stepjepa.models import EMBEDDED_ALIAS
from stepjepa.modes import Mode
from stepjepa.precision import BF16_HELP, BOTH_FLAGS, NO_BF16_HELP, precision_name
from stepjepa.run_outputs import (METRIC_FILES, check_output_dir, is_finished, resume_checkpoint, save_outputs,
                                  stop_on_signal, trim_metrics)
from stepjepa.runlock import output_dir_lock
from stepjepa.training_args import check_trackers, report_to, training_arguments

if TYPE_CHECKING:
    from stepjepa.dataset_cache import RowSettings



@dataclass
class TrainConfig:
    """Flags of `stepjepa train` and `finetune_step_jepa_adapted.py` (the options guide's names and defaults)."""

    train_file: Optional[str] = field(default=None, metadata=_help("Chat JSONL training data (required)."))
    eval_file: Optional[str] = field(default=None, metadata=_help("Chat JSONL evaluation data (loss only)."))
    model_name: str = field(default=EMBEDDED_ALIAS, metadata=_help(
        f"Hugging Face id, local directory, or the embedded '{EMBEDDED_ALIAS}' (no network needed)."))
    output_dir: str = field(default="./checkpoints", metadata=_help("Where the model, metrics and checkpoints go."))
    max_length: int = field(default=512, metadata=_help("Maximum conversation tokens; longer ones are truncated."))
    batch_size: int = field(default=4, metadata=_help("Examples per device per micro-batch."))
    grad_accum: int = field(default=1, metadata=_help("Gradient accumulation steps."))
    learning_rate: Optional[float] = field(default=None, metadata=_help("Peak learning rate (default 2e-4 with --lora, else 2e-5)."))
    num_epochs: float = field(default=1.0, metadata=_help("Training epochs."))
    max_steps: int = field(default=-1, metadata=_help("Stop after this many optimizer steps (-1: run the epochs)."))
    eval_steps: int = field(default=50, metadata=_help("Evaluate every N steps when --eval_file is given."))
    save_steps: int = field(default=100, metadata=_help("Save a resumable checkpoint every N steps."))
    save_total_limit: int = field(default=2, metadata=_help(
        "Keep this run's newest N checkpoints (0: keep all); other runs' checkpoints are never deleted."))
    logging_steps: int = field(default=10, metadata=_help("Log (console and metrics.jsonl) every N steps."))
    warmup_ratio: float = field(default=0.0, metadata=_help("Fraction of steps of linear learning-rate warm-up."))
    lora: bool = field(default=False, metadata=_help("LoRA fine-tuning (rank r, alpha 2r, every linear projection)."))
    lora_rank: int = field(default=16, metadata=_help("LoRA rank."))
    regular: bool = field(default=False, metadata=_help("Regular fine-tuning: LM loss only, no JEPA."))
    step_jepa: bool = field(default=False, metadata=_help("Step-JEPA: predict step 2's embedding from the context up to step 1."))
    predictors: int = field(default=0, metadata=_help("K predictor tokens <|predictor_1..K|> (0: identity predictor)."))
    step_pairs: str = field(default="first", metadata=_help(
        "Step-JEPA pairs: first (step 1 -> step 2), all (every step -> the next, all in the one packed row), "
        "random (one of those pairs per example, drawn each step from seed, step and example)."))
    target_stop_grad: bool = field(default=False, metadata=_help(
        "Stop the gradient through view_b (the target embedding), as I-JEPA and BYOL do."))
    lbd: float = field(default=0.1, metadata=_help("JEPA loss weight (lambda)."))
    gamma: float = field(default=1.0, metadata=_help("LM loss weight (gamma)."))
    last_token: str = field(default="auto", metadata=_help(
        "Embedding token counted from a view's end (e.g. -2), or 'auto': the view's last content token "
        "(LLM-JEPA). Step-JEPA views have no template tokens: their embedding is always their last token."))
    jepa_l2: bool = field(default=False, metadata=_help("JEPA loss ||a - b||_2."))
    jepa_mse: bool = field(default=False, metadata=_help("JEPA loss mean((a - b)^2)."))
    infonce: bool = field(default=False, metadata=_help(f"JEPA loss InfoNCE (temperature {INFONCE_TEMPERATURE}, in-batch negatives)."))
    jepa_ratio: float = field(default=-1.0, metadata=_help("Random JEPA dropout: each batch gets the JEPA term with this probability (<= 0: always)."))
    seed: int = field(default=42, metadata=_help("Random seed.", aliases=["--finetune_seed"]))
    debug: int = field(default=5, metadata=_help("0 quiet, 1 basic info, 5 losses during training, 7 print the first batch's layout and exit."))
    overwrite_output_dir: bool = field(default=False, metadata=_help("Allow a non-empty output directory (files this run writes are replaced)."))
    resume_from_checkpoint: Optional[str] = field(default=None, metadata=_help("Checkpoint directory, or 'latest' in --output_dir."))
    group_by_length: bool = field(default=False, metadata=_help("Batch examples of similar length together (less padding)."))
    gradient_checkpointing: bool = field(default=False, metadata=_help("Recompute activations in backward (less memory, slower)."))
    attn_implementation: str = field(default="sdpa", metadata=_help(
        "Attention kernel: sdpa (default; dense mask), eager, or flex_attention (CUDA only: a BlockMask built on "
        "the GPU, no T x T mask; Llama-family models)."))
    num_proc: Optional[int] = field(default=None, metadata=_help(
        "Processes that tokenize the data (default: the machine's cores, at most one per MiB of data)."))
    cache_dir: Optional[str] = field(default=None, metadata=_help(
        "Where tokenized rows are cached, keyed by data, tokenizer, template and row settings "
        "(default: $STEPJEPA_DATA_CACHE, else data/ in the model cache, ~/.cache/stepjepa/data)."))
    no_data_cache: bool = field(default=False, metadata=_help("Tokenize afresh and store nothing in the cache."))
    streaming: bool = field(default=False, metadata=_help(
        "Tokenize the training file while training, for data of any size: nothing cached, no tokenizing pass "
        "before the first step; rows are shuffled within --shuffle_buffer, not over the whole file; needs "
        "--max_steps."))
    shuffle_buffer: int = field(default=1000, metadata=_help("--streaming: rows held (and shuffled) at a time."))
    report_to: str = field(default="none", metadata=_help(
        "Trackers that also receive the logged metrics (transformers' report_to): none, tensorboard, wandb, "
        "... or several, comma-separated; tensorboard writes under --output_dir/runs."))
    bf16: bool = field(default=False, metadata=_help(BF16_HELP))
    no_bf16: bool = field(default=False, metadata=_help(NO_BF16_HELP))

    def __post_init__(self) -> None:
        check_finite_floats(self)
        check_seed("seed", self.seed)
        if self.regular and self.step_jepa:
            raise ValueError("--regular and --step_jepa contradict each other; choose one mode")
        losses = [flag for flag in ("jepa_l2", "jepa_mse", "infonce") if getattr(self, flag)]
        if len(losses) > 1:
            raise ValueError(f"choose one JEPA loss, got --{' and --'.join(losses)}")
        # A weight at its default cannot be told from an absent flag: only other values are refused.
        weights = [name for name in ("lbd", "gamma") if getattr(self, name) != self.__dataclass_fields__[name].default]
        if self.regular and (losses or self.predictors or weights):
            raise ValueError("--regular trains without JEPA; drop the JEPA options (" + ", ".join(
                [f"--{flag}" for flag in losses + weights] + (["--predictors"] if self.predictors else [])) + ")")
        if self.regular and self.target_stop_grad:
            raise ValueError("--regular trains without JEPA; drop --target_stop_grad")
        if self.step_pairs not in STEP_PAIRS:
            raise ValueError(f"--step_pairs must be one of {', '.join(STEP_PAIRS)}, got {self.step_pairs!r}")
        if self.step_pairs != "first" and not self.step_jepa:
            raise ValueError(f"--step_pairs {self.step_pairs} needs --step_jepa (LLM-JEPA has one pair per example)")
        if self.predictors < 0:
            raise ValueError(f"--predictors must be >= 0, got {self.predictors}")
        if self.jepa_ratio > 1:
            raise ValueError(f"--jepa_ratio is a probability, at most 1; got {self.jepa_ratio}")
        for name in ("lbd", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_length", "batch_size", "grad_accum", "lora_rank", "eval_steps", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"--max_steps must be -1 (run the epochs) or >= 1, got {self.max_steps}")
        if self.save_total_limit < 0:
            raise ValueError(f"--save_total_limit must be >= 0 (0 keeps every checkpoint), got {self.save_total_limit}")
        if self.num_epochs <= 0:
            raise ValueError(f"--num_epochs must be > 0, got {self.num_epochs}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.last_token != "auto":
            try:
                offset = int(self.last_token)
            except ValueError:
                raise ValueError(f"--last_token must be 'auto' or a negative integer, got {self.last_token!r}") from None
            if offset >= 0:
                raise ValueError(f"--last_token counts from the end and must be negative, got {offset}")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"--attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)}, "
                             f"got {self.attn_implementation!r}")
        if self.bf16 and self.no_bf16:
            raise ValueError(BOTH_FLAGS)
        check_trackers(report_to(self.report_to))
        if self.streaming and self.max_steps < 1:
            raise ValueError("--streaming needs --max_steps (a stream has no length to count epochs by)")
        if self.streaming and self.group_by_length:
            raise ValueError("--group_by_length sorts the whole data set; it cannot with --streaming")
        if self.shuffle_buffer < 1:
            raise ValueError(f"--shuffle_buffer must be >= 1, got {self.shuffle_buffer}")
        if self.num_proc is not None and self.num_proc < 1:
            raise ValueError(f"--num_proc must be >= 1, got {self.num_proc}")
        if not self.train_file:
            raise ValueError("--train_file is required")

    @property
    def mode(self) -> Mode:
        """The mode the flags choose: --regular, --step_jepa, else LLM-JEPA."""
        return "regular" if self.regular else "step_jepa" if self.step_jepa else "llm_jepa"

    @property
    def loss_kind(self) -> str:
        return "l2" if self.jepa_l2 else "mse" if self.jepa_mse else "infonce" if self.infonce else "cosine"

    @property
    def last_token_offset(self) -> int | None:
        """None for 'auto' (the view's last content token)."""
        return None if self.last_token == "auto" or self.mode == "step_jepa" else int(self.last_token)

    @property
    def peak_learning_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (2e-4 if self.lora else 2e-5)


def _say(cfg: TrainConfig, level: int, message: str) -> None:
    if cfg.debug >= level and int(os.environ.get("RANK", "0")) == 0:
        print(message, flush=True)


def _packed_rows(cfg: TrainConfig, path: str, tokenizer, settings: RowSettings, data_sha256: str | None = None):
    """The packed rows of one data file (cached unless --no_data_cache); ``data_sha256``: its digest if known."""
    from stepjepa.dataset_cache import packed_rows

    try:
        return packed_rows(path, tokenizer, cfg.model_name, settings, cache_dir=cfg.cache_dir,
                           use_cache=not cfg.no_data_cache, num_proc=cfg.num_proc, data_sha256=data_sha256)
    except ValueError as exc:
        # A tokenizing process's error is re-raised inside datasets: say it from here, in one line (cli.py).
        raise ValueError(str(exc)) from None


def _check_rows(cfg: TrainConfig, rows, args, num_predictors: int) -> None:
    """Say where the rows came from and what they train; refuse a JEPA run without any JEPA view."""
    counts = rows.counts
    if cfg.debug >= 1 and args.world_size > 1:
        print(f"rank {args.process_index}/{args.world_size}: data "
              f"{'from the cache' if rows.cache_hit else 'tokenized here'}", flush=True)
    _say(cfg, 1, rows.describe())
    _say(cfg, 1, describe_counts(cfg, counts, num_predictors))
    if cfg.mode != "regular" and not counts["jepa"]:
        raise ValueError(f"no example has its JEPA views within --max_length {cfg.max_length} "
                         f"({counts['lm_only_truncated']} cut, {counts['lm_only_few_steps']} with fewer than two steps): "
                         "the run would be LM-only; raise --max_length or train with --regular")
    if cfg.mode == "step_jepa" and counts["lm_only_few_steps"]:
        print(f"note: {counts['lm_only_few_steps']} examples have fewer than two steps and train with the LM loss only")
    if cfg.mode != "regular" and counts["lm_only_truncated"]:
        print(f"note: {counts['lm_only_truncated']} examples have their views cut by --max_length {cfg.max_length} "
              "and train with the LM loss only")


def print_first_batch(tokenizer, rows: list[dict], count: int = 2) -> None:
    """--debug 7: the layout of the first rows (regions, positions, mask), each as packed before collation."""
    import torch

    from stepjepa.layout import allowed_attention, render_layout

    for b, row in enumerate(rows[:count]):
        columns = [torch.tensor([row[key]]) for key in ("block_start", "context_end")]
        allowed = allowed_attention(*columns)[0]
        tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
        print(f"--- row {b} ({len(tokens)} tokens, conversation {row['conversation_length']}) ---")
        print(render_layout(tokens, row, allowed))


def describe_counts(cfg: TrainConfig, counts, num_predictors: int) -> str:
    """One line saying what each example of the training file will train."""
    objective = "LM only" if cfg.mode == "regular" else f"loss {cfg.loss_kind}, K={num_predictors}"
    if cfg.target_stop_grad:
        objective += ", target stop-gradient"
    pairs = {"first": "", "all": ", every step -> the next",
             "random": ", one drawn per example each step"}[cfg.step_pairs] if cfg.mode == "step_jepa" else ""
    return (f"mode {cfg.mode}, {objective}: {counts['rows']} examples, "
            f"{counts['jepa']} with JEPA views ({counts['pairs']} pairs{pairs}), "
            f"{counts['lm_only_few_steps']} LM-only (fewer than two steps), "
            f"{counts['lm_only_truncated']} LM-only (views cut by --max_length), {counts['truncated']} truncated, "
            f"{counts['dropped_no_labels']} dropped (no assistant token within --max_length)")


def run_train(cfg: TrainConfig) -> int:
    """Train in an output directory no other run uses meanwhile (rank 0 holds its lock)."""
    check_output_dir(cfg)
    try:
        with output_dir_lock(cfg.output_dir) if int(os.environ.get("RANK", "0")) == 0 else nullcontext():
            return _train(cfg)
    finally:
        end_process_group()


def end_process_group() -> None:
    """Take down the torchrun process group before exit: left to the interpreter's teardown, gloo's threads
    sometimes abort a rank ("terminate called without an active exception") after a run that succeeded."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _train(cfg: TrainConfig) -> int:
    """Train, save the model (LoRA merged, adapter in ``adapter/``), tokenizer, metrics and summary."""
    from stepjepa.checkpoints import numbered_checkpoints, run_record

    record = run_record(cfg.mode, cfg.model_name, cfg.train_file, cfg.predictors if cfg.mode != "regular" else 0,
                        cfg.seed)
    resume = resume_checkpoint(cfg, record) if cfg.resume_from_checkpoint else None
    finished = resume is not None and is_finished(cfg, resume)
    if finished and Path(cfg.output_dir, "train_summary.json").is_file():
        _say(cfg, 0, f"run already finished: {resume} is its last step; nothing to train")
        return 0

    import torch
    from transformers import set_seed

    from stepjepa.attention import uses_dense_mask
    from stepjepa.data import write_json_atomic
    from stepjepa.dataset_cache import ExpandingCollator, RowSettings, expand_row, streamed_rows, with_regions
    from stepjepa.layout import PackedCollator
    from stepjepa.models import add_predictor_tokens, apply_lora, load_model, load_tokenizer, resize_for_tokenizer
    from stepjepa.objective import Objective
    from stepjepa.trainer import (JepaTrainer, MetricsFileCallback, NonFiniteLoss, QuietProgressCallback,
                                  trainable_parameter_count)

    for path in (cfg.train_file, cfg.eval_file):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file")
    tokenizer = load_tokenizer(cfg.model_name)
    predictor_ids = add_predictor_tokens(tokenizer, cfg.predictors) if cfg.mode != "regular" and cfg.predictors else []
    settings = RowSettings(cfg.mode, tuple(predictor_ids), cfg.last_token_offset, cfg.max_length, cfg.step_pairs)
    args = training_arguments(cfg, has_eval=bool(cfg.eval_file))
    # Rank 0 of each machine tokenizes (or finds the cache); the other ranks then read what it stored.
    with args.main_process_first(desc="tokenizing the data"):
        # The run record hashed the training file already: the cache key takes that digest, not a second pass.
        rows = None if cfg.streaming else _packed_rows(cfg, cfg.train_file, tokenizer, settings,
                                                      record["train_file_sha256"])
        eval_rows = _packed_rows(cfg, cfg.eval_file, tokenizer, settings) if cfg.eval_file else None
    if rows is None:
        train_dataset, counts = streamed_rows(cfg.train_file, tokenizer, settings, cfg.seed, cfg.shuffle_buffer), Counter()
        if args.world_size > 1:
            from datasets.distributed import split_dataset_by_node

            train_dataset = split_dataset_by_node(train_dataset, rank=args.process_index, world_size=args.world_size)
        _say(cfg, 1, f"data: streaming {cfg.train_file}: tokenized as read, rows shuffled within "
                     f"{cfg.shuffle_buffer}, nothing cached")
    else:
        train_dataset, counts = rows.dataset, rows.counts
        _check_rows(cfg, rows, args, len(predictor_ids))
    if cfg.step_jepa and cfg.last_token != "auto":
        _say(cfg, 1, "note: --last_token is not used by Step-JEPA (its views end at their embedding token)")
    # --step_pairs random drops pairs from collated batches (select_pairs): each pair's blocks stay in its row.
    collator = PackedCollator(tokenizer.pad_token_id, dense_mask=uses_dense_mask(cfg.attn_implementation),
                              fill_padding=cfg.step_pairs != "random")
    if cfg.debug >= 7:
        count = min(cfg.batch_size, 2)
        first = [expand_row(row) for row in islice(train_dataset, count)] if rows is None else [
            rows.row(i) for i in range(min(count, len(rows.dataset)))]
        print_first_batch(tokenizer, with_regions(first, cfg.train_file, tokenizer, settings), len(first))
        return 0

    if cfg.attn_implementation == "flex_attention" and not torch.cuda.is_available():
        raise ValueError("--attn_implementation flex_attention needs a CUDA GPU (FlexAttention has no backward on "
                         "the CPU); use sdpa")
    set_seed(cfg.seed)
    model = load_model(cfg.model_name, attn_implementation=cfg.attn_implementation)
    resize_for_tokenizer(model, tokenizer)
    if cfg.lora:
        model = apply_lora(model, cfg.lora_rank)
    trainable, total = trainable_parameter_count(model)
    _say(cfg, 1, f"model {cfg.model_name}: {trainable:,} trainable of {total:,} parameters, "
                 f"{args.device.type} {precision_name(args.bf16)}")

    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    trainer = JepaTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_rows.dataset if eval_rows else None,
        data_collator=ExpandingCollator(collator),
        processing_class=tokenizer,
        callbacks=[MetricsFileCallback(cfg.output_dir)],
        objective=Objective(mode=cfg.mode, loss=cfg.loss_kind, lbd=cfg.lbd, gamma=cfg.gamma,
                            target_stop_grad=cfg.target_stop_grad),
        jepa_ratio=cfg.jepa_ratio,
        one_pair_per_example=cfg.step_pairs == "random",
        debug=cfg.debug,
        run_record=record,
        save_total_limit=cfg.save_total_limit,
    )
    if cfg.debug < 5:
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        if cfg.debug > 0:
            trainer.add_callback(QuietProgressCallback())

    if resume:
        trim_metrics(cfg.output_dir, resume)
    else:
        # A fresh run into an overwritten directory starts its own metric files.
        for name in METRIC_FILES:
            Path(cfg.output_dir, name).unlink(missing_ok=True)
        earlier = [path.name for _, path in numbered_checkpoints(cfg.output_dir)]
        if earlier:
            _say(cfg, 1, f"note: {cfg.output_dir} holds checkpoints of earlier runs ({', '.join(earlier)}); "
                         "they are kept and never rotated by this run")
    start = time.time()
    if finished:
        # Stopped after its last checkpoint but before the model was saved: save it from that checkpoint.
        from transformers import TrainerState

        trainer._load_from_checkpoint(resume)
        trainer.state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
        _say(cfg, 0, f"run already finished: {resume} is its last step; saving its model")
    interrupted = {"signal": None}
    try:
        with stop_on_signal(trainer) as interrupted:
            result = None if finished else trainer.train(resume_from_checkpoint=resume)
    except NonFiniteLoss as exc:
        kept = [path for _, path in numbered_checkpoints(cfg.output_dir)]
        raise ValueError(f"{exc}; training stopped, no model saved"
                         + (f", the checkpoints are kept (last {kept[-1]})" if kept else "")) from None
    if interrupted["signal"]:
        trainer._save_checkpoint(trainer.model, trial=None)
        print(f"interrupted by {interrupted['signal']}: checkpoint saved at step {trainer.state.global_step}; "
              f"resume with --resume_from_checkpoint latest", file=sys.stderr)
        return 128 + signal.Signals[interrupted["signal"]].value
    if trainer.is_world_process_zero():
        save_outputs(cfg, trainer.model, tokenizer)
        summary = {
            "mode": cfg.mode, "loss": cfg.loss_kind, "predictors": len(predictor_ids), "examples": dict(counts),
            "global_step": trainer.state.global_step, "train_loss": result.training_loss if result else None,
            "runtime_s": round(time.time() - start, 1), "config": asdict(cfg),
        }
        write_json_atomic(Path(cfg.output_dir) / "train_summary.json", summary)
        metrics_file = Path(cfg.output_dir) / "metrics.jsonl"
        _say(cfg, 0, f"model saved to {cfg.output_dir}" + (f"; metrics in {metrics_file}" if metrics_file.is_file() else ""))
    return 0
