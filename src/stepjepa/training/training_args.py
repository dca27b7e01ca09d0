"""The Trainer's arguments for a training run, and the trackers (--report_to) they name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stepjepa.precision import use_bf16

if TYPE_CHECKING:
    from stepjepa.training.config import TrainConfig
from stepjepa.training.config import report_to

# Collating processes on CUDA: enough to build a batch of 16 GSM8K rows (0.03-0.08 s) well within a 0.1 s step.
CUDA_DATALOADER_WORKERS = 4


def dataloader_workers(requested: int | None, cuda: bool) -> int:
    """--dataloader_num_workers, or by device: 0 on the CPU (its cores train), :data:`CUDA_DATALOADER_WORKERS`
    on CUDA (batches are built while the GPU computes)."""
    if requested is not None:
        return requested
    return CUDA_DATALOADER_WORKERS if cuda else 0


def accelerator_config(streaming: bool, cuda: bool) -> dict:
    """Accelerate's data-loading settings: non-blocking copies of pinned batches on CUDA; a stream's batches
    differ in width (dynamic padding), so each rank reads its own part and none is dispatched."""
    config = {}
    if cuda:
        config["non_blocking"] = True
    if streaming:
        config["dispatch_batches"] = False
    return config


def training_arguments(cfg: TrainConfig, has_eval: bool):
    """The Trainer's arguments for this run: bf16 mixed precision where fast (or asked), else float32."""
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    workers = dataloader_workers(cfg.dataloader_num_workers, cuda)
    accelerate = accelerator_config(cfg.streaming, cuda)
    return TrainingArguments(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.peak_learning_rate,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=None,  # JepaTrainer rotates this run's own checkpoints (--save_total_limit)
        eval_strategy="steps" if has_eval else "no",
        eval_steps=cfg.eval_steps,
        seed=cfg.seed,
        bf16=use_bf16(cfg.bf16, cfg.no_bf16, "cuda" if cuda else "cpu"),
        use_cpu=not cuda,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        **({"activation_checkpointing": True} if cfg.gradient_checkpointing else {}),
        remove_unused_columns=False,
        label_names=["labels"],
        report_to=report_to(cfg.report_to),
        # The step bar belongs to a run watched live (--debug 2 and up); the sweep's children run at --debug 1.
        disable_tqdm=cfg.debug < 2,
        dataloader_num_workers=workers,
        dataloader_pin_memory=cuda,
        dataloader_persistent_workers=workers > 0,
        # The Trainer's per-step NaN filter reads the loss back from the device every step; JepaTrainer checks
        # the losses when it logs or saves instead.
        logging_nan_inf_filter=False,
        torch_compile=cfg.compile,
        ddp_find_unused_parameters=False,  # every parameter takes part in every step
        **({"accelerator_config": accelerate} if accelerate else {}),
    )

