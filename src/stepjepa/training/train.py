"""The `train` command: configuration, data, model, Trainer, and the saved outputs."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from stepjepa.core.errors import UsageError
from stepjepa.machine import provenance
from stepjepa.precision import precision_name
from stepjepa.training.config import TrainConfig
from stepjepa.training.run_outputs import (
    SecondSignal,
    check_inputs_apart,
    check_output_dir,
    is_finished,
    resume_checkpoint,
    save_interrupted,
    save_outputs,
    stop_on_signal,
    trim_metrics,
)
from stepjepa.training.rundir import RunDir
from stepjepa.training.runlock import output_dir_lock
from stepjepa.training.training_args import training_arguments

if TYPE_CHECKING:
    from stepjepa.data.cache import RowSettings


def _say(cfg: TrainConfig, level: int, message: str) -> None:
    if cfg.debug >= level and int(os.environ.get("RANK", "0")) == 0:
        print(message, flush=True)


def _packed_rows(cfg: TrainConfig, path: str, tokenizer, settings: RowSettings, data_sha256: str | None = None):
    """The packed rows of one data file (cached unless --no_data_cache); ``data_sha256``: its digest if known."""
    from stepjepa.data.cache import packed_rows

    return packed_rows(path, tokenizer, cfg.model_name, settings, cache_dir=cfg.cache_dir,
                       use_cache=not cfg.no_data_cache, num_proc=cfg.num_proc, data_sha256=data_sha256)


def _packs(cfg: TrainConfig, rows):
    """--packing: a data file's rows in packs of at most --pack_length tokens, planned by best-fit decreasing
    over the stored rows' lengths (the same plan on every rank and every resume)."""
    import pyarrow.compute as pc

    from stepjepa.core.packing import PackedDataset, best_fit_decreasing, fill_ratio
    from stepjepa.data.cache import expand_row

    lengths = pc.list_value_length(rows.dataset.data.column("input_ids")).to_pylist()
    plan = best_fit_decreasing(lengths, cfg.row_length)
    _say(cfg, 1, f"packing: {len(lengths)} examples in {len(plan)} rows of at most {cfg.row_length} tokens "
                 f"({len(lengths) / len(plan):.2f} examples a row, {fill_ratio(lengths, plan, cfg.row_length):.1%} "
                 f"filled); --batch_size {cfg.batch_size} rows a micro-batch")
    return PackedDataset(rows.dataset, plan, expand_row)


def _check_rows(cfg: TrainConfig, rows, args, num_predictors: int) -> None:
    """Say where the rows came from and what they train; refuse a JEPA run without any JEPA view."""
    counts = rows.counts
    if cfg.debug >= 1 and args.world_size > 1:
        print(f"rank {args.process_index}/{args.world_size}: data "
              f"{'from the cache' if rows.cache_hit else 'tokenized here'}", flush=True)
    _say(cfg, 1, rows.describe())
    _say(cfg, 1, describe_counts(cfg, counts, num_predictors))
    if cfg.mode != "regular" and not counts["jepa"]:
        raise UsageError(f"no example has its JEPA views within --max_length {cfg.max_length} "
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

    from stepjepa.core.layout import allowed_attention, render_layout

    for b, row in enumerate(rows[:count]):
        columns = [torch.tensor([row[key]]) if key in row else None for key in ("block_start", "context_end",
                                                                               "doc_start")]
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
    check_inputs_apart(cfg)
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
    from stepjepa.training.checkpoints import run_record

    run = RunDir(cfg.output_dir)
    record = run_record(cfg.mode, cfg.model_name, cfg.train_file, cfg.predictors if cfg.mode != "regular" else 0,
                        cfg.seed, cfg.lora, cfg.row_length if cfg.packing else None)
    resume = resume_checkpoint(cfg, record) if cfg.resume_from_checkpoint else None
    finished = resume is not None and is_finished(cfg, resume)
    # Only this run's own summary, its model whole, says so: another run's (an overwritten directory) does not.
    if finished and run.finished_summary(record) is not None:
        _say(cfg, 0, f"run already finished: {resume} is its last step; nothing to train")
        return 0

    import torch
    from transformers import set_seed

    from stepjepa.core.attention import batch_width_multiple, choose_attention, host_builds_dense_mask
    from stepjepa.core.layout import PackedCollator
    from stepjepa.core.objective import HostCountingCollator, Objective
    from stepjepa.data.cache import ExpandingCollator, RowSettings, expand_row, streamed_rows, with_regions
    from stepjepa.models import (
        add_predictor_tokens,
        apply_lora,
        attention_facts,
        load_model,
        load_tokenizer,
        resize_for_tokenizer,
    )
    from stepjepa.training.trainer import (
        JepaTrainer,
        MetricsFileCallback,
        NonFiniteLoss,
        QuietProgressCallback,
        trainable_parameter_count,
    )

    for path in (cfg.train_file, cfg.eval_file):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file")
    # The attention implementation from the model's config alone: an explicit one it cannot run stops here,
    # before any data is tokenized or weights are read.
    cuda = torch.cuda.is_available()
    model_class, supports_flex, head_dim = attention_facts(cfg.model_name)
    attention = choose_attention(cfg.attn_implementation, cuda, supports_flex, head_dim, model_class)
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
    eval_dataset = eval_rows.dataset if eval_rows else None
    if cfg.packing:  # the collator takes packs of expanded rows; --streaming is refused with --packing
        train_dataset, eval_dataset = _packs(cfg, rows), _packs(cfg, eval_rows) if eval_rows else None
    if cfg.step_jepa and cfg.last_token != "auto":
        _say(cfg, 1, "note: --last_token is not used by Step-JEPA (its views end at their embedding token)")
    # --step_pairs random drops pairs from collated batches (select_pairs): each pair's blocks stay in its row.
    # On CUDA the step builds its mask on the device; compiled kernels get batch widths in multiples of 128.
    collator = PackedCollator(tokenizer.pad_token_id,
                              dense_mask=host_builds_dense_mask(attention.implementation, cuda),
                              fill_padding=cfg.step_pairs != "random",
                              pad_to_multiple_of=batch_width_multiple(attention.implementation, cuda, cfg.compile))
    if cfg.debug >= 7:
        count = min(cfg.batch_size, 2)
        first = [expand_row(row) for row in islice(train_dataset, count)] if rows is None else [
            rows.row(i) for i in range(min(count, len(rows.dataset)))]
        if cfg.packing:  # the first rows as trained: each pack joined into one row
            from stepjepa.core.layout import join_rows

            first = [join_rows(with_regions(train_dataset[i], cfg.train_file, tokenizer, settings))
                     for i in range(min(count, len(train_dataset)))]
        else:
            first = with_regions(first, cfg.train_file, tokenizer, settings)
        print_first_batch(tokenizer, first, len(first))
        return 0

    set_seed(cfg.seed)
    model = load_model(cfg.model_name, attn_implementation=attention.implementation)
    resize_for_tokenizer(model, tokenizer)
    if cfg.lora:
        model = apply_lora(model, cfg.lora_rank)
    trainable, total = trainable_parameter_count(model)
    _say(cfg, 1, f"model {cfg.model_name}: {trainable:,} trainable of {total:,} parameters, "
                 f"{args.device.type} {precision_name(args.bf16)}, attention {attention.implementation} "
                 f"({attention.reason})" + (", compiled" if cfg.compile else "")
                 + (f", {args.dataloader_num_workers} collating workers" if args.dataloader_num_workers else ""))
    if args.dataloader_num_workers:
        # The workers fork after tokenization; the tokenizer's own threads are not needed in them.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    trainer = JepaTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=HostCountingCollator(collator if cfg.packing else ExpandingCollator(collator)),
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
        if cfg.debug > 1:  # 1 (basic info, as the sweep's children run): no step bar
            trainer.add_callback(QuietProgressCallback())

    if resume:
        trim_metrics(cfg.output_dir, resume)
    else:
        # A fresh run into an overwritten directory starts its own metric files and claims no earlier finish.
        for path in (run.metrics, run.eval_metrics):
            path.unlink(missing_ok=True)
        run.forget_summary()
        earlier = [path.name for _, path in run.checkpoints()]
        if earlier:
            _say(cfg, 1, f"note: {cfg.output_dir} holds checkpoints of earlier runs ({', '.join(earlier)}); "
                         "they are kept and never rotated by this run")
    start = time.time()
    if finished:
        # Stopped after its last checkpoint but before the model was saved: save it from that checkpoint.
        from transformers import TrainerState

        trainer._load_from_checkpoint(resume)
        trainer.state = TrainerState.load_from_json(str(Path(resume) / RunDir.TRAINER_STATE))
        _say(cfg, 0, f"run already finished: {resume} is its last step; saving its model")
    try:
        with stop_on_signal(trainer) as interrupted:
            result = None if finished else trainer.train(resume_from_checkpoint=resume)
            if interrupted["signal"]:
                # Within the block: a second signal during this save stops it with one line (SecondSignal).
                return save_interrupted(trainer, interrupted["signal"])
    except NonFiniteLoss as exc:
        kept = [path for _, path in run.checkpoints()]
        raise UsageError(f"{exc}; training stopped, no model saved"
                         + (f", the checkpoints are kept (last {kept[-1]})" if kept else "")) from None
    except SecondSignal as exc:
        kept, _ = run.newest_complete()
        print(f"interrupted again by {exc}: stopped at once" + (
            f"; resume from {kept} with --resume_from_checkpoint latest" if kept else "; no checkpoint to resume"),
              file=sys.stderr)
        return 128 + exc.signum
    if trainer.is_world_process_zero():
        summary = {
            "mode": cfg.mode, "loss": cfg.loss_kind, "predictors": len(predictor_ids), "examples": dict(counts),
            "global_step": trainer.state.global_step, "train_loss": result.training_loss if result else None,
            "runtime_s": round(time.time() - start, 1), "config": asdict(cfg), "run": record,
            "provenance": provenance(str(args.device), precision_name(args.bf16)),
        }
        save_outputs(cfg, trainer.model, tokenizer, summary)
        _say(cfg, 0, f"model saved to {cfg.output_dir}" + (f"; metrics in {run.metrics}" if run.metrics.is_file() else ""))
    return 0
