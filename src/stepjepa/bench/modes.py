"""What ``stepjepa bench`` runs: its modes, the chats of its fixed batches, its model, each mode's batches and loss.

Modes, each timed as a full training step (forward, backward, AdamW step):

- ``regular``: LM loss only, through the packed engine (no view blocks).
- ``llm_jepa`` and ``step_jepa``: the packed single pass of :mod:`stepjepa.core.objective` with K predictors.
- ``step_jepa_multipass``: the same Step-JEPA losses computed the straightforward way by
  :mod:`stepjepa.core.multipass`, one batched forward pass per view: the conversations (LM loss), system..step 1
  followed by the K predictors (view_a), step 2 alone (view_b).
- ``llm_jepa_multipass`` (only with ``--modes``): LLM-JEPA's losses the same way, the conversations, the
  user messages alone (with the K predictors) and the assistant messages alone as three batches.
- ``step_jepa_all`` and ``step_jepa_all_multipass`` (only with ``--modes``): Step-JEPA with
  ``--step_pairs all`` (every step predicts the next) packed in one pass, and the same losses with one
  batched pass for the conversations, one for every pair's system..step i + predictors, one for every
  step i+1 alone.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable

import torch

from stepjepa.bench.config import MULTIPASS, TRAINING_MODES
from stepjepa.core.attention import AttentionChoice, batch_width_multiple, choose_attention, host_builds_dense_mask
from stepjepa.core.errors import UsageError
from stepjepa.core.examples import RowSettings, pack_chat
from stepjepa.core.layout import PackedCollator
from stepjepa.core.multipass import multipass_batch, multipass_objective
from stepjepa.core.objective import Objective, ObjectiveOutput, add_host_counts, compute_objective
from stepjepa.core.packing import best_fit_decreasing
from stepjepa.core.tokenization import IGNORE_INDEX, encode_chat
from stepjepa.data import DEFAULT_SYSTEM_PROMPT, Dropped, chat_row, gsm8k_problem, read_jsonl

if TYPE_CHECKING:
    from stepjepa.bench.config import BenchConfig

# A small random model of the same family for --tiny (keys the config does not have are skipped).
TINY_SIZES = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "n_inner": 128,
}


# ---- data ------------------------------------------------------------------------------------


def file_chats(path: str) -> list[list[dict]]:
    """Chats of a GSM8K or chat JSONL file, converted as ``stepjepa prepare`` does; rows it drops are skipped."""
    chats, changes = [], Counter()
    for _, row in read_jsonl(path):
        try:
            if isinstance(row, dict) and "messages" in row:
                chats.append(chat_row(row, None, changes)["messages"])
            elif isinstance(row, dict) and isinstance(row.get("answer"), str):
                chats.append(gsm8k_problem(row, False, changes).to_row(DEFAULT_SYSTEM_PROMPT)["messages"])
        except Dropped:
            continue
    if not chats:
        raise UsageError(f"{path}: no GSM8K ({{question, answer}}) or chat ({{messages}}) row could be used")
    return chats


def _synthetic_chats(count: int, seed: int) -> list[list[dict]]:
    """GSM8K-like multi-step word problems from the synthetic generator."""
    from stepjepa.data.synthetic import synthetic_splits

    train, _ = synthetic_splits(count, seed)
    return [problem.to_row(DEFAULT_SYSTEM_PROMPT)["messages"] for problem in train]


def bench_chats(cfg: BenchConfig, tokenizer: Any) -> list[list[dict]]:
    """The chats of the fixed batches, ``cfg.num_examples()`` of them: a seeded sample of the file (cycled
    when it is smaller), or synthetic problems. Chats with no assistant token within max_length are skipped.
    """
    pool = file_chats(cfg.data_file) if cfg.data_file else _synthetic_chats(2 * cfg.num_examples(), cfg.seed)
    random.Random(cfg.seed).shuffle(pool)
    usable = [m for m in pool if any(x != IGNORE_INDEX for x in encode_chat(tokenizer, m, cfg.max_length).labels)]
    if not usable:
        raise UsageError(f"--max_length {cfg.max_length} leaves no assistant token in any example")
    return [usable[i % len(usable)] for i in range(cfg.num_examples())]


# ---- model -----------------------------------------------------------------------------------


def tiny_config(model_name: str):
    """``model_name``'s config shrunk to :data:`TINY_SIZES`."""
    from transformers import AutoConfig

    from stepjepa.models import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(model_name))
    for key, value in TINY_SIZES.items():
        if hasattr(config, key):
            setattr(config, key, value)
    return config


def tiny_model(model_name: str, attn_implementation: str = "sdpa") -> torch.nn.Module:
    """A random model with ``model_name``'s architecture, shrunk to :data:`TINY_SIZES`."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(tiny_config(model_name), dtype=torch.float32,
                                            attn_implementation=attn_implementation)


def bench_attention(cfg: BenchConfig, device: str) -> AttentionChoice:
    """The attention implementation the bench runs (:func:`stepjepa.core.attention.choose_attention`), from the
    (tiny or full) model's config."""
    from stepjepa.models import attention_facts, config_attention_facts

    model_class, supports_flex, head_dim = (config_attention_facts(tiny_config(cfg.model_name)) if cfg.tiny
                                            else attention_facts(cfg.model_name))
    return choose_attention(cfg.attn_implementation, device.startswith("cuda"), supports_flex, head_dim,
                            model_class)


def load_bench_model(cfg: BenchConfig, device: str,
                     attn_implementation: str = "sdpa") -> tuple[torch.nn.Module, Any, list[int]]:
    """Model (train mode, on ``device``), tokenizer, predictor ids: identical in every mode for one seed."""
    from stepjepa.models import add_predictor_tokens, apply_lora, load_model, load_tokenizer, resize_for_tokenizer

    tokenizer = load_tokenizer(cfg.model_name)
    # Every mode gets the predictor tokens, so the embedding matrix (and its optimiser state) is the same size.
    predictor_ids = add_predictor_tokens(tokenizer, cfg.predictors) if cfg.predictors else []
    torch.manual_seed(cfg.seed)
    model = (tiny_model(cfg.model_name, attn_implementation) if cfg.tiny
             else load_model(cfg.model_name, attn_implementation=attn_implementation))
    resize_for_tokenizer(model, tokenizer)
    if cfg.lora:
        model = apply_lora(model, cfg.lora_rank)
    return model.to(device).train(), tokenizer, predictor_ids


# ---- batches and loss of a mode --------------------------------------------------------------


def build_batches(cfg: BenchConfig, mode: str, tokenizer: Any, chats: list[list[dict]], predictor_ids: list[int],
                  attn_implementation: str = "sdpa", cuda: bool = False) -> tuple[list[dict], list[float]]:
    """The fixed batches of ``mode`` (``cfg.steps`` of them) and the seconds each took to build on the host.
    Packed batches are those ``stepjepa train`` builds for the implementation and device (host counts; on CUDA
    no host mask, flex widths in multiples of 128) and carry ``placed_tokens``, their tokens that are not padding."""
    training_mode, step_pairs = TRAINING_MODES[MULTIPASS.get(mode, mode)]
    collator = PackedCollator(tokenizer.pad_token_id, dense_mask=host_builds_dense_mask(attn_implementation, cuda),
                              pad_to_multiple_of=batch_width_multiple(attn_implementation, cuda))
    if cfg.packing:
        return _packed_batches(cfg, training_mode, step_pairs, tokenizer, chats, predictor_ids, collator)

    def packed(rows, pad):
        return {**add_host_counts(collator(rows)), "placed_tokens": sum(len(row["input_ids"]) for row in rows)}

    collate = multipass_batch if mode in MULTIPASS else packed
    batches, build_s = [], []
    for start in range(0, len(chats), cfg.batch_size):
        began = time.perf_counter()
        rows = [pack_chat(tokenizer, m, RowSettings(training_mode, predictor_ids, None, cfg.max_length, step_pairs))
                for m in chats[start : start + cfg.batch_size]]
        batches.append(collate(rows, tokenizer.pad_token_id))
        build_s.append(time.perf_counter() - began)
    return batches, build_s


def _packed_batches(cfg: BenchConfig, training_mode: str, step_pairs: str, tokenizer: Any, chats: list[list[dict]],
                    predictor_ids: list[int], collate: PackedCollator) -> tuple[list[dict], list[float]]:
    """--packing: the pool of chats planned into rows of at most ``cfg.row_length(mode)`` tokens by best-fit
    decreasing, as ``train --packing`` plans its data set; ``cfg.steps`` batches of ``cfg.batch_size`` rows
    drawn from those packs (seeded; cycled if too few). A batch's build time: tokenizing its chats and collating."""
    rows, seconds = [], []
    for messages in chats:
        began = time.perf_counter()
        rows.append(pack_chat(tokenizer, messages, RowSettings(training_mode, predictor_ids, None, cfg.max_length, step_pairs)))
        seconds.append(time.perf_counter() - began)
    plan = best_fit_decreasing([len(row["input_ids"]) for row in rows], cfg.row_length(training_mode))
    random.Random(cfg.seed).shuffle(plan)
    batches, build_s = [], []
    for step in range(cfg.steps):
        packs = [plan[(step * cfg.batch_size + i) % len(plan)] for i in range(cfg.batch_size)]
        began = time.perf_counter()
        batch = add_host_counts(collate([[rows[i] for i in pack] for pack in packs]))
        batches.append({**batch, "placed_tokens": sum(len(rows[i]["input_ids"]) for pack in packs for i in pack)})
        build_s.append(time.perf_counter() - began + sum(seconds[i] for pack in packs for i in pack))
    return batches, build_s


def loss_function(mode: str) -> Callable[[torch.nn.Module, dict], ObjectiveOutput]:
    """``(model, batch) -> ObjectiveOutput`` of a mode, with the default objective (cosine, lbd 0.1, gamma 1)."""
    objective = Objective(mode=TRAINING_MODES[MULTIPASS.get(mode, mode)][0])
    compute = multipass_objective if mode in MULTIPASS else compute_objective
    return lambda model, batch: compute(model, batch, objective)


def padding_fraction(mode: str, batch: dict) -> float:
    """The share of the token slots a batch runs that hold padding (view blocks and repeated contexts are tokens,
    not padding): packed, ``1 - placed_tokens / slots``; multi-pass, over its three batches' masks."""
    if mode in MULTIPASS:
        pairs = (("input_ids", "attention_mask"), ("view_a_ids", "view_a_mask"), ("view_b_ids", "view_b_mask"))
        slots = sum(batch[ids].numel() for ids, _ in pairs if ids in batch)
        placed = sum(int(batch[mask].sum()) for ids, mask in pairs if ids in batch)
    else:
        slots, placed = batch["input_ids"].numel(), batch["placed_tokens"]
    return 1 - placed / slots


def token_counts(mode: str, batch: dict) -> tuple[int, int, int, int]:
    """(conversation tokens, tokens run through the model incl. padding, rows with a JEPA pair, JEPA pairs)."""
    if mode in MULTIPASS:
        processed = sum(batch[key].numel() for key in ("input_ids", "view_a_ids", "view_b_ids") if key in batch)
        return (int(batch["num_tokens"]), processed, len(set(batch["view_rows"].tolist())),
                len(batch["view_rows"]))
    return (int(batch["num_tokens"]), batch["input_ids"].numel(), int((batch["view_a_index"] >= 0).sum()),
            len(batch["pair_row"]))
