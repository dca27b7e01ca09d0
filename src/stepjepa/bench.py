"""``stepjepa bench``: the cost of one training step in each mode, on the same fixed batches.

Modes, each timed as a full training step (forward, backward, AdamW step):

- ``regular``: LM loss only, through the packed engine (no view blocks).
- ``llm_jepa`` and ``step_jepa``: the packed single pass of :mod:`stepjepa.objective` with K predictors.
- ``step_jepa_multipass``: the same Step-JEPA losses computed the straightforward way, one batched
  forward pass per view: the conversations (LM loss), system..step 1 followed by the K predictors
  (view_a), step 2 alone (view_b). Each pass is padded to its own longest row, uses the model's plain
  causal mask, and runs the LM head on the labelled window only, as the packed pass does: the difference
  measured is the packing, nothing else.
- ``llm_jepa_multipass`` (only with ``--modes``): LLM-JEPA's losses the same way, the conversations, the
  user messages alone (with the K predictors) and the assistant messages alone as three batches.
- ``step_jepa_all`` and ``step_jepa_all_multipass`` (only with ``--modes``): Step-JEPA with
  ``--step_pairs all`` (every step predicts the next) packed in one pass, and the same losses with one
  batched pass for the conversations, one for every pair's system..step i + predictors, one for every
  step i+1 alone.

Timing: every mode trains one model with one AdamW optimiser, interleaved: round i runs batch i in every
mode (the order rotated each round), so load changes on a shared machine hit all modes alike. Median, min
and max over ``--steps`` rounds after ``--warmup`` rounds; batch i holds the same chats in every mode.
Throughput counts conversation tokens only (view blocks are the overhead being measured), so every mode is
credited the same tokens for the same batch.

Peak memory: with ``--isolate`` (the default) each mode runs again in a fresh Python process, so allocator
state and lazily allocated optimiser state start alike: one warm-up step, a reset of the peak, then the
mode's largest batches. On CPU the peak is the resident set (``VmHWM``, reset through
``/proc/self/clear_refs``): weights, gradients, AdamW state and the largest footprint of a step. On CUDA it
is ``torch.cuda.max_memory_allocated``. Without ``--isolate`` each step's peak is read in the shared timing
process, where memory freed by one mode but kept by the allocator is seen by the next.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from stepjepa.data import DEFAULT_SYSTEM_PROMPT, read_jsonl, write_json_atomic
from stepjepa.errors import UsageError
from stepjepa.flags import check_finite_floats, check_seed
from stepjepa.models import EMBEDDED_ALIAS
from stepjepa.precision import BOTH_FLAGS, precision_name, use_bf16

PRECISIONS = ("fp32", "bf16")

MODES = ("regular", "llm_jepa", "step_jepa", "step_jepa_multipass")  # the default run
# Multi-pass modes and the packed mode whose losses they compute; the modes after MODES run only when asked.
MULTIPASS = {"step_jepa_multipass": "step_jepa", "llm_jepa_multipass": "llm_jepa",
             "step_jepa_all_multipass": "step_jepa_all"}
ALL_MODES = MODES + ("llm_jepa_multipass", "step_jepa_all", "step_jepa_all_multipass")
# A packed bench mode -> the training mode and --step_pairs it runs.
TRAINING_MODES = {"regular": ("regular", "first"), "llm_jepa": ("llm_jepa", "first"),
                  "step_jepa": ("step_jepa", "first"), "step_jepa_all": ("step_jepa", "all")}
MIN_MEASURED_STEPS = 10
# Issue 5's targets: (report key, description, limit, "max" or "min").
TARGETS = (
    ("step_jepa_time_vs_regular", "Step-JEPA step time / regular", 1.25, "max"),
    ("llm_jepa_time_vs_regular", "LLM-JEPA step time / regular", 2.1, "max"),
    ("step_jepa_speedup_vs_multipass", "multi-pass step time / packed Step-JEPA", 1.5, "min"),
    ("step_jepa_mem_vs_regular", "Step-JEPA peak memory / regular", 1.3, "max"),
    # Issue 11's: the all-pairs row costs no more than its extra tokens, and beats one pass per view.
    ("step_jepa_all_time_vs_token_ratio", "Step-JEPA all pairs (time / regular) / (tokens / regular)", 1.05, "max"),
    ("step_jepa_all_speedup_vs_multipass", "multi-pass step time / packed Step-JEPA all pairs", 1.5, "min"),
    ("eval_batched_speedup", "batched generation examples/s / batch size 1", 4.0, "min"),
)
# A small random model of the same family for --tiny (keys the config does not have are skipped).
TINY_SIZES = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "n_inner": 128,
}


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class BenchConfig:
    """Flags of ``stepjepa bench``: step time, throughput and peak memory of each training mode."""

    model_name: str = field(default=EMBEDDED_ALIAS, metadata=_help(
        f"Hugging Face id, local directory, or the embedded '{EMBEDDED_ALIAS}'."))
    tiny: bool = field(default=False, metadata=_help(
        "Replace the model by a small random one of the same family (2 layers, width 64), same tokenizer."))
    data_file: Optional[str] = field(default=None, metadata=_help(
        "GSM8K ({question, answer}) or chat JSONL ({messages}); default: synthetic GSM8K-like problems."))
    batch_size: int = field(default=4, metadata=_help("Examples per training step."))
    steps: int = field(default=MIN_MEASURED_STEPS, metadata=_help(
        f"Measured steps per mode (at least {MIN_MEASURED_STEPS}), each on its own fixed batch."))
    warmup: int = field(default=2, metadata=_help("Unmeasured steps first (the first one allocates AdamW state)."))
    max_length: int = field(default=512, metadata=_help("Maximum conversation tokens; longer ones are truncated."))
    predictors: int = field(default=2, metadata=_help("K predictor tokens of llm_jepa and step_jepa."))
    lora: bool = field(default=False, metadata=_help("Train LoRA adapters (rank --lora_rank) instead of all weights."))
    lora_rank: int = field(default=16, metadata=_help("LoRA rank."))
    learning_rate: float = field(default=1e-5, metadata=_help("AdamW learning rate."))
    seed: int = field(default=0, metadata=_help("Seed of the row choice, new token embeddings and LoRA init."))
    modes: str = field(default=",".join(MODES), metadata=_help(
        f"Comma-separated modes to run, of {', '.join(ALL_MODES)}."))
    device: str = field(default="auto", metadata=_help("auto (cuda if available, else cpu), cpu, cuda or cuda:N."))
    bf16: bool = field(default=False, metadata=_help(
        "Time in bf16 mixed precision (float32 weights, bf16 autocast). Default auto: bf16 where the hardware "
        "runs it fast (CUDA with bf16, CPUs with avx512_bf16/amx_bf16), float32 elsewhere."))
    no_bf16: bool = field(default=False, metadata=_help("Time in float32."))
    precisions: str = field(default="", metadata=_help(
        "Comma-separated precisions to time side by side, interleaved on the same batches: fp32,bf16 "
        "(default: the one --bf16/--no_bf16/auto picks)."))
    isolate: bool = field(default=True, metadata=_help(
        "Measure each mode's peak memory in a fresh process (comparable between modes; slower)."))
    json: bool = field(default=False, metadata=_help("Print one JSON object on stdout instead of the table."))
    output: Optional[str] = field(default=None, metadata=_help("Also write the JSON report to this file."))
    eval: bool = field(default=False, metadata=_help(
        "Also time batched generation: examples/s at batch size 1 and at --eval_batch_size."))
    eval_examples: int = field(default=16, metadata=_help("Prompts generated in each --eval run."))
    eval_batch_size: int = field(default=16, metadata=_help(
        "The larger generation batch of --eval (stepjepa evaluate's default batch size)."))
    eval_max_new_tokens: int = field(default=128, metadata=_help("Most tokens generated per prompt in --eval."))

    def __post_init__(self) -> None:
        check_finite_floats(self)
        check_seed("seed", self.seed)
        positive = {"batch_size": self.batch_size, "max_length": self.max_length, "warmup": self.warmup,
                    "eval_examples": self.eval_examples, "eval_max_new_tokens": self.eval_max_new_tokens,
                    "lora_rank": self.lora_rank}
        for name, value in positive.items():
            if value < 1:
                raise UsageError(f"--{name} must be at least 1, got {value}")
        if self.steps < MIN_MEASURED_STEPS:
            raise UsageError(f"--steps must be at least {MIN_MEASURED_STEPS} (medians over fewer are noise), got {self.steps}")
        if self.predictors < 0:
            raise UsageError(f"--predictors must be 0 or more, got {self.predictors}")
        if not self.learning_rate > 0:
            raise UsageError(f"--learning_rate must be positive, got {self.learning_rate}")
        if self.eval_batch_size < 2:
            raise UsageError(f"--eval_batch_size must be at least 2 (it is compared with batch size 1), got {self.eval_batch_size}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got '{self.device}'")
        if self.data_file is not None and not Path(self.data_file).is_file():
            raise UsageError(f"--data_file {self.data_file}: no such file")
        if self.bf16 and self.no_bf16:
            raise UsageError(BOTH_FLAGS)
        if self.precisions and (self.bf16 or self.no_bf16):
            raise UsageError("--precisions names the precisions itself; drop --bf16/--no_bf16")
        precisions = self._named_precisions()
        if self.precisions and (not precisions or set(precisions) - set(PRECISIONS) or len(set(precisions)) != len(precisions)):
            raise UsageError(f"--precisions '{self.precisions}': give distinct precisions of {', '.join(PRECISIONS)}, comma-separated")
        modes = self.mode_list()
        unknown = [m for m in modes if m not in ALL_MODES]
        if unknown or not modes or len(set(modes)) != len(modes):
            raise UsageError(f"--modes '{self.modes}': give distinct modes of {', '.join(ALL_MODES)}, comma-separated")

    def mode_list(self) -> list[str]:
        return [m.strip() for m in self.modes.split(",") if m.strip()]

    def _named_precisions(self) -> list[str]:
        return [p.strip() for p in self.precisions.split(",") if p.strip()]

    def precision_list(self) -> list[str]:
        """The precisions to time: --precisions, else the one --bf16/--no_bf16/auto picks on this device."""
        if self.precisions:
            return self._named_precisions()
        cuda = self.device.startswith("cuda") or (self.device == "auto" and torch.cuda.is_available())
        return [precision_name(use_bf16(self.bf16, self.no_bf16, "cuda" if cuda else "cpu"))]

    def num_examples(self) -> int:
        """Chats in the fixed batches: one batch per measured step."""
        return self.batch_size * self.steps


# ---- data ------------------------------------------------------------------------------------


def _file_chats(path: str) -> list[list[dict]]:
    """Chats of a GSM8K or chat JSONL file, converted as ``stepjepa prepare`` does; rows it drops are skipped."""
    from stepjepa.data import Dropped, chat_row, gsm8k_problem

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
    from stepjepa.synthetic import synthetic_splits

    train, _ = synthetic_splits(count, seed)
    return [problem.to_row(DEFAULT_SYSTEM_PROMPT)["messages"] for problem in train]


def bench_chats(cfg: BenchConfig, tokenizer: Any) -> list[list[dict]]:
    """The chats of the fixed batches, ``cfg.num_examples()`` of them: a seeded sample of the file (cycled
    when it is smaller), or synthetic problems. Chats with no assistant token within max_length are skipped.
    """
    import random

    from stepjepa.tokenization import IGNORE_INDEX, encode_chat

    pool = _file_chats(cfg.data_file) if cfg.data_file else _synthetic_chats(2 * cfg.num_examples(), cfg.seed)
    random.Random(cfg.seed).shuffle(pool)
    usable = [m for m in pool if any(x != IGNORE_INDEX for x in encode_chat(tokenizer, m, cfg.max_length).labels)]
    if not usable:
        raise UsageError(f"--max_length {cfg.max_length} leaves no assistant token in any example")
    return [usable[i % len(usable)] for i in range(cfg.num_examples())]


# ---- model -----------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available here")
    return device


def tiny_model(model_name: str) -> torch.nn.Module:
    """A random model with ``model_name``'s architecture, shrunk to :data:`TINY_SIZES`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from stepjepa.models import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(model_name))
    for key, value in TINY_SIZES.items():
        if hasattr(config, key):
            setattr(config, key, value)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")


def load_bench_model(cfg: BenchConfig, device: str) -> tuple[torch.nn.Module, Any, list[int]]:
    """Model (train mode, on ``device``), tokenizer, predictor ids: identical in every mode for one seed."""
    from stepjepa.models import add_predictor_tokens, apply_lora, load_model, load_tokenizer, resize_for_tokenizer

    tokenizer = load_tokenizer(cfg.model_name)
    # Every mode gets the predictor tokens, so the embedding matrix (and its optimiser state) is the same size.
    predictor_ids = add_predictor_tokens(tokenizer, cfg.predictors) if cfg.predictors else []
    torch.manual_seed(cfg.seed)
    model = tiny_model(cfg.model_name) if cfg.tiny else load_model(cfg.model_name)
    resize_for_tokenizer(model, tokenizer)
    if cfg.lora:
        model = apply_lora(model, cfg.lora_rank)
    return model.to(device).train(), tokenizer, predictor_ids


# ---- the straightforward multi-pass Step-JEPA ------------------------------------------------


def _right_pad(sequences: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T)`` ids padded on the right to the longest, and the ``(B, T)`` 0/1 attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids, mask


def _view_pairs(tokenizer: Any, messages: list[dict], chat: Any, mode: str, predictor_ids: list[int],
                max_length: int, step_pairs: str = "first") -> list[tuple[list[int] | None, int, list[int], int]]:
    """``(view_a ids, view_a index, view_b ids, view_b index)`` of each JEPA pair of one chat, each view as its
    own sequence; none when the chat has no pair (the packed layout trains it with LM only). view_a ids None:
    the Step-JEPA identity predictor (K = 0), whose view_a is step i's last token in the conversation pass.
    """
    from stepjepa.layout import step_pair_numbers
    from stepjepa.tokenization import encode_view

    k = len(predictor_ids)
    if mode == "step_jepa":
        pairs = []
        for number in step_pair_numbers(chat, step_pairs):
            (_, context_end), (next_start, next_end) = chat.step_spans[number - 1 : number + 1]
            target = chat.input_ids[next_start:next_end]
            context = chat.input_ids[:context_end] + list(predictor_ids) if k else None
            pairs.append((context, context_end + k - 1, target, len(target) - 1))
        return pairs
    # LLM-JEPA: the user message alone with the predictors after its content; the assistant message alone.
    user = encode_view(tokenizer, next(m for m in messages if m["role"] == "user"), max_length)
    assistant = encode_view(tokenizer, messages[-1], max_length)
    if user.last_content_index < 0 or assistant.last_content_index < 0:
        return []
    cut = user.last_content_index + 1
    user_ids = user.input_ids[:cut] + list(predictor_ids) + user.input_ids[cut:]
    return [(user_ids, user.last_content_index + k, assistant.input_ids, assistant.last_content_index)]


def multipass_batch(tokenizer: Any, chats: list[list[dict]], mode: str, predictor_ids: list[int],
                    max_length: int, step_pairs: str = "first") -> dict:
    """Separately padded batches for the straightforward computation of ``mode`` (step_jepa or llm_jepa):
    the conversations (LM loss), the view_a sequences, the view_b sequences.

    ``view_rows`` are the conversation of each JEPA pair (repeated for a chat with several);
    ``view_a_index``/``view_b_index`` locate each embedding in its own sequence; without ``view_a_ids``
    (Step-JEPA, K = 0) view_a is read from the conversation pass at ``view_a_index``.
    """
    from stepjepa.tokenization import IGNORE_INDEX, encode_chat

    pad = tokenizer.pad_token_id
    encoded = [encode_chat(tokenizer, messages, max_length) for messages in chats]
    input_ids, attention_mask = _right_pad([c.input_ids for c in encoded], pad)
    labels, _ = _right_pad([c.labels for c in encoded], IGNORE_INDEX)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
             "num_tokens": torch.tensor(sum(len(c.input_ids) for c in encoded))}
    per_chat = [_view_pairs(tokenizer, m, c, mode, predictor_ids, max_length, step_pairs)
                for m, c in zip(chats, encoded)]
    rows = [b for b, pairs in enumerate(per_chat) for _ in pairs]
    batch["view_rows"] = torch.tensor(rows, dtype=torch.long)
    if not rows:
        return batch
    a_ids, a_index, b_ids, b_index = zip(*(pair for pairs in per_chat for pair in pairs))
    if a_ids[0] is not None:
        batch["view_a_ids"], batch["view_a_mask"] = _right_pad(list(a_ids), pad)
    batch["view_a_index"] = torch.tensor(a_index)
    batch["view_b_ids"], batch["view_b_mask"] = _right_pad(list(b_ids), pad)
    batch["view_b_index"] = torch.tensor(b_index)
    return batch


def _labelled_window(labels: torch.Tensor) -> tuple[int, int]:
    """``[lo, hi)``: positions whose next token is labelled in some row (where the LM head must run)."""
    labelled = (labels != -100).any(dim=0).nonzero().flatten()
    return int(labelled[0]) - 1, int(labelled[-1])


def _view_hidden(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``(N, D)``: the last-layer hidden state of each row at ``index`` in a plain causal pass over the views."""
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False, logits_to_keep=1)
    return out.hidden_states[-1][torch.arange(len(ids), device=ids.device), index]  # (N, D)


def multipass_objective(model: torch.nn.Module, batch: dict, objective: Any) -> Any:
    """``gamma * LM + lbd * JEPA`` by one forward pass per view (see :func:`multipass_batch`); the packed
    pass's :class:`~stepjepa.objective.ObjectiveOutput`, equal to it up to float rounding.
    """
    from stepjepa.losses import jepa_loss, lm_loss
    from stepjepa.objective import ObjectiveOutput

    rows = batch["view_rows"]
    identity = len(rows) > 0 and "view_a_ids" not in batch  # Step-JEPA K = 0: view_a from the conversation pass
    lo, hi = _labelled_window(batch["labels"])
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
        output_hidden_states=identity, logits_to_keep=torch.arange(lo, hi, device=batch["input_ids"].device),
    )
    lm = lm_loss(out.logits, batch["labels"][:, lo + 1 : hi + 1])  # logits (B, hi-lo, V)
    if len(rows) == 0:
        return ObjectiveOutput(objective.gamma * lm, lm, None, None, None)
    if identity:
        view_a = out.hidden_states[-1][rows, batch["view_a_index"]]  # (N, D)
    else:
        view_a = _view_hidden(model, batch["view_a_ids"], batch["view_a_mask"], batch["view_a_index"])
    view_b = _view_hidden(model, batch["view_b_ids"], batch["view_b_mask"], batch["view_b_index"])
    jepa = jepa_loss(view_a, view_b, objective.loss, objective.temperature)
    return ObjectiveOutput(objective.gamma * lm + objective.lbd * jepa, lm, jepa, view_a, view_b)


# ---- batches and loss of a mode --------------------------------------------------------------


def build_batches(cfg: BenchConfig, mode: str, tokenizer: Any, chats: list[list[dict]],
                  predictor_ids: list[int]) -> tuple[list[dict], list[float]]:
    """The fixed batches of ``mode`` (``cfg.steps`` of them) and the seconds each took to build on the host."""
    from stepjepa.examples import pack_chat
    from stepjepa.layout import PackedCollator

    collator = PackedCollator(tokenizer.pad_token_id)
    batches, build_s = [], []
    for start in range(0, len(chats), cfg.batch_size):
        group = chats[start : start + cfg.batch_size]
        began = time.perf_counter()
        training_mode, step_pairs = TRAINING_MODES[MULTIPASS.get(mode, mode)]
        if mode in MULTIPASS:
            batch = multipass_batch(tokenizer, group, training_mode, predictor_ids, cfg.max_length, step_pairs)
        else:
            batch = collator([pack_chat(tokenizer, m, training_mode, predictor_ids, None, cfg.max_length, step_pairs)
                              for m in group])
        build_s.append(time.perf_counter() - began)
        batches.append(batch)
    return batches, build_s


def loss_function(mode: str) -> Callable[[torch.nn.Module, dict], Any]:
    """``(model, batch) -> ObjectiveOutput`` of a mode, with the default objective (cosine, lbd 0.1, gamma 1)."""
    from stepjepa.objective import Objective, compute_objective

    if mode in MULTIPASS:
        objective = Objective(mode=TRAINING_MODES[MULTIPASS[mode]][0])
        return lambda model, batch: multipass_objective(model, batch, objective)
    objective = Objective(mode=TRAINING_MODES[mode][0])
    return lambda model, batch: compute_objective(model, batch, objective)


def _token_counts(mode: str, batch: dict) -> tuple[int, int, int, int]:
    """(conversation tokens, tokens run through the model incl. padding, rows with a JEPA pair, JEPA pairs)."""
    if mode in MULTIPASS:
        processed = sum(batch[key].numel() for key in ("input_ids", "view_a_ids", "view_b_ids") if key in batch)
        return (int(batch["num_tokens"]), processed, len(set(batch["view_rows"].tolist())),
                len(batch["view_rows"]))
    return (int(batch["num_tokens"]), batch["input_ids"].numel(), int((batch["view_a_index"] >= 0).sum()),
            len(batch["pair_row"]))


# ---- memory ----------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory of this process since :meth:`reset`: the resident set on CPU, allocated memory on CUDA."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.method = "torch.cuda.max_memory_allocated" if self.cuda else "VmHWM (peak resident set) after reset"

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current resident set
        except OSError:
            self.method = "ru_maxrss (peak resident set of the whole process; not reset)"

    @staticmethod
    def _status_mb(key: str) -> float | None:
        try:
            match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
        except OSError:
            return None
        return int(match.group(1)) / 1024 if match else None

    def current_mb(self) -> float | None:
        return torch.cuda.memory_allocated() / 2**20 if self.cuda else self._status_mb("VmRSS")

    def peak_mb(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        if self.method.startswith("VmHWM"):
            peak = self._status_mb("VmHWM")
            if peak is not None:
                return peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# ---- measuring -------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _to(batch: dict, device: str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class StepRunner:
    """One model and one AdamW optimiser; :meth:`step` times a full training step of any mode on a batch,
    under bf16 autocast when ``bf16`` (float32 weights and optimiser, as the Trainer's mixed precision)."""

    def __init__(self, cfg: BenchConfig, device: str, bf16: bool = False):
        self.device = device
        self.bf16 = bf16
        self.model, self.tokenizer, self.predictor_ids = load_bench_model(cfg, device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        # Fused AdamW, as the Trainer's default optimiser (adamw_torch_fused) is.
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, fused=True)
        self.losses = {mode: loss_function(mode) for mode in ALL_MODES}

    def step(self, mode: str, batch: dict) -> float:
        """Seconds of forward + backward + optimiser step (device synchronised at both ends)."""
        _sync(self.device)
        began = time.perf_counter()
        with torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16, enabled=self.bf16):
            out = self.losses[mode](self.model, batch)
        out.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        _sync(self.device)
        return time.perf_counter() - began


def _fixed_batches(cfg: BenchConfig, trainer: StepRunner, modes: list[str]) -> tuple[dict, dict]:
    """Per mode: its batches on the device, and the host seconds each took to build."""
    chats = bench_chats(cfg, trainer.tokenizer)
    batches, build_s = {}, {}
    for mode in modes:
        built, build_s[mode] = build_batches(cfg, mode, trainer.tokenizer, chats, trainer.predictor_ids)
        batches[mode] = [_to(b, trainer.device) for b in built]
    return batches, build_s


def measure_times(cfg: BenchConfig, with_memory: bool) -> dict[str, dict[str, dict]]:
    """Every mode's step times in every precision on the same batches, interleaved: round i runs batch i in
    every (precision, mode) (the order rotated each round), so load changes on a shared machine hit all alike.
    Each precision trains its own copy of the model. Returns ``{precision: {mode: result}}``.

    ``with_memory``: also the peak memory of each mode's steps in this shared process (reset before each step).
    """
    device = resolve_device(cfg.device)
    modes, precisions = cfg.mode_list(), cfg.precision_list()
    runners = {p: StepRunner(cfg, device, bf16=p == "bf16") for p in precisions}
    batches, build_s = _fixed_batches(cfg, runners[precisions[0]], modes)
    memory = PeakMemory(device)
    variants = [(p, mode) for p in precisions for mode in modes]
    for i in range(cfg.warmup):
        for p, mode in variants:
            runners[p].step(mode, batches[mode][i % cfg.steps])
    gc.collect()
    times = {variant: [] for variant in variants}
    peaks = {variant: 0.0 for variant in variants}
    for i in range(cfg.steps):
        for variant in variants[i % len(variants):] + variants[: i % len(variants)]:
            memory.reset()
            times[variant].append(runners[variant[0]].step(variant[1], batches[variant[1]][i]))
            peaks[variant] = max(peaks[variant], memory.peak_mb())
    results = {p: _mode_results(cfg, modes, batches, build_s, {m: times[p, m] for m in modes},
                                {m: peaks[p, m] for m in modes}, with_memory) for p in precisions}
    del runners, batches
    gc.collect()
    return results


def _mode_results(cfg: BenchConfig, modes: list[str], batches: dict, build_s: dict, times: dict, peaks: dict,
                  with_memory: bool) -> dict[str, dict]:
    """Per mode: the step-time statistics, throughput and token counts of one precision's steps."""
    results = {}
    for mode in modes:
        counts = [_token_counts(mode, batch) for batch in batches[mode]]
        conversation = [c[0] for c in counts]
        results[mode] = {
            "median_step_s": statistics.median(times[mode]),
            "min_step_s": min(times[mode]),
            "max_step_s": max(times[mode]),
            # Each step's conversation tokens over its time; the median of those.
            "tokens_per_s": statistics.median(n / t for n, t in zip(conversation, times[mode])),
            "peak_mem_mb": round(peaks[mode], 1) if with_memory else None,
            "step_s": times[mode],
            "conversation_tokens": sum(conversation),
            "processed_tokens": sum(c[1] for c in counts),
            "jepa_rows": sum(c[2] for c in counts),
            "jepa_pairs": sum(c[3] for c in counts),
            "rows": sum(len(b["input_ids"]) for b in batches[mode]),
            "median_batch_build_s": statistics.median(build_s[mode]),
        }
    return results


MEMORY_BATCHES = 3


def measure_memory(cfg: BenchConfig, mode: str) -> dict:
    """Peak memory of ``mode``'s training steps in the config's first precision, in this (fresh) process:
    one warm-up step, a reset, then the :data:`MEMORY_BATCHES` batches of this mode that run the most tokens.
    """
    device = resolve_device(cfg.device)
    memory = PeakMemory(device)
    trainer = StepRunner(cfg, device, bf16=cfg.precision_list()[0] == "bf16")
    batches, _ = _fixed_batches(cfg, trainer, [mode])
    largest = sorted(batches[mode], key=lambda b: -_token_counts(mode, b)[1])[:MEMORY_BATCHES]
    loaded_mb = memory.current_mb()
    trainer.step(mode, batches[mode][0])
    gc.collect()
    memory.reset()
    before_mb = memory.current_mb()
    for batch in largest:
        trainer.step(mode, batch)
    return {"peak_mem_mb": round(memory.peak_mb(), 1), "mem_after_load_mb": _round(loaded_mb),
            "mem_before_steps_mb": _round(before_mb), "memory_method": memory.method}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def measure_eval(cfg: BenchConfig) -> dict:
    """Examples/s of greedy generation with :func:`stepjepa.generation.generate_responses` at batch size 1
    and at ``cfg.eval_batch_size``, on the same prompts (system + user of the bench's chats).

    Each batch size runs twice, in the order 1, N, N, 1, and its two times are averaged: a load that
    drifts steadily on a shared machine then weighs on both alike.
    """
    from stepjepa.generation import generate_responses

    device = resolve_device(cfg.device)
    model, tokenizer, _ = load_bench_model(cfg, device)
    # Generation runs with bf16 weights when the bench's first precision is bf16, as stepjepa evaluate does.
    model = model.to(torch.bfloat16 if cfg.precision_list()[0] == "bf16" else torch.float32).eval()
    prompts = [m[:-1] for m in bench_chats(cfg, tokenizer)[: cfg.eval_examples]]
    generate_responses(model, tokenizer, prompts[:1], batch_size=1, max_new_tokens=4)  # warm-up
    seconds, generated = {1: [], cfg.eval_batch_size: []}, {}
    for batch_size in (1, cfg.eval_batch_size, cfg.eval_batch_size, 1):
        _sync(device)
        began = time.perf_counter()
        responses = generate_responses(model, tokenizer, prompts, batch_size=batch_size,
                                       max_new_tokens=cfg.eval_max_new_tokens)
        _sync(device)
        seconds[batch_size].append(time.perf_counter() - began)
        generated[batch_size] = sum(len(ids) for ids in tokenizer(responses, add_special_tokens=False)["input_ids"])
    runs = {
        size: {"batch_size": size, "seconds": statistics.mean(times), "seconds_runs": times,
               "examples_per_s": len(prompts) / statistics.mean(times), "generated_tokens": generated[size]}
        for size, times in seconds.items()
    }
    single, batched = runs[1], runs[cfg.eval_batch_size]
    return {"examples": len(prompts), "max_new_tokens": cfg.eval_max_new_tokens, "batch_size_1": single,
            "batched": batched, "speedup": batched["examples_per_s"] / single["examples_per_s"]}


# ---- fresh processes for memory --------------------------------------------------------------


def _run_isolated(cfg: BenchConfig, mode: str) -> dict:
    """:func:`measure_memory` of one mode in a fresh Python process; its output is shown only if it fails."""
    with tempfile.TemporaryDirectory(prefix="stepjepa-bench-") as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "stepjepa.bench", "--memory-worker", mode, str(result)]
        done = subprocess.run(command, input=json.dumps(asdict(cfg)), text=True, capture_output=True)
        if done.returncode != 0 or not result.is_file():
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            raise RuntimeError(f"bench memory worker for '{mode}' failed with exit status {done.returncode}:\n{tail}")
        return json.loads(result.read_text())


def _worker(mode: str, result_path: str) -> int:
    cfg = BenchConfig(**json.loads(sys.stdin.read()))
    Path(result_path).write_text(json.dumps(measure_memory(cfg, mode)))
    return 0


# ---- report ----------------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        match = None
    return match.group(1).strip() if match else (platform.processor() or platform.machine())


def machine(device: str) -> dict:
    import transformers

    info = {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def add_ratios(report: dict) -> None:
    """Ratios against regular per mode (each precision against its own regular), bf16 against fp32, the packed
    speed-up, and each target's verdict (on the first precision)."""
    by_precision = report.get("precisions") or {report["precision"]: report["modes"]}
    for modes in by_precision.values():
        _ratios_within(modes)
    if {"fp32", "bf16"} <= by_precision.keys():
        for mode, result in by_precision["bf16"].items():
            fp32 = by_precision["fp32"][mode]
            result["step_time_vs_fp32"] = _ratio(result["median_step_s"], fp32["median_step_s"])
            result["paired_step_time_vs_fp32"] = statistics.median(a / b for a, b in zip(result["step_s"], fp32["step_s"]))
            result["peak_mem_vs_fp32"] = _ratio(result["peak_mem_mb"], fp32["peak_mem_mb"])
    modes = report["modes"]
    values = {
        "step_jepa_time_vs_regular": modes.get("step_jepa", {}).get("step_time_vs_regular"),
        "llm_jepa_time_vs_regular": modes.get("llm_jepa", {}).get("step_time_vs_regular"),
        "step_jepa_mem_vs_regular": modes.get("step_jepa", {}).get("peak_mem_vs_regular"),
        "eval_batched_speedup": (report.get("eval") or {}).get("speedup"),
    }
    values["step_jepa_speedup_vs_multipass"] = modes.get("step_jepa", {}).get("speedup_vs_multipass")
    every_pair = modes.get("step_jepa_all", {})
    values["step_jepa_all_time_vs_token_ratio"] = _ratio(every_pair.get("step_time_vs_regular"),
                                                         every_pair.get("processed_tokens_vs_regular"))
    values["step_jepa_all_speedup_vs_multipass"] = every_pair.get("speedup_vs_multipass")
    report["targets"] = {
        key: {"what": what, "value": values[key], "limit": limit, "kind": kind,
              "met": values[key] <= limit if kind == "max" else values[key] >= limit}
        for key, what, limit, kind in TARGETS if values.get(key) is not None
    }


def _ratios_within(modes: dict[str, dict]) -> None:
    """Each mode against regular in the same precision, and packed modes against their multi-pass computation."""
    regular = modes.get("regular")
    for name, result in modes.items():
        if regular:
            result["step_time_vs_regular"] = _ratio(result["median_step_s"], regular["median_step_s"])
            # Robustness checks on a noisy machine: the ratio of the fastest steps, and the median of the
            # per-round ratios (each pair ran the same batch, moments apart).
            result["min_step_time_vs_regular"] = _ratio(result["min_step_s"], regular["min_step_s"])
            result["paired_step_time_vs_regular"] = statistics.median(
                a / b for a, b in zip(result["step_s"], regular["step_s"]))
            result["tokens_per_s_vs_regular"] = _ratio(result["tokens_per_s"], regular["tokens_per_s"])
            result["peak_mem_vs_regular"] = _ratio(result["peak_mem_mb"], regular["peak_mem_mb"])
            # Tokens run (padding included) against regular's: the cost a packed row cannot avoid.
            result["processed_tokens_vs_regular"] = _ratio(result["processed_tokens"], regular["processed_tokens"])
    for multipass, packed in MULTIPASS.items():
        if multipass in modes and packed in modes:
            modes[packed]["speedup_vs_multipass"] = _ratio(modes[multipass]["median_step_s"], modes[packed]["median_step_s"])


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_report(report: dict) -> str:
    """The report as a table for the terminal."""
    cfg, info = report["config"], report["machine"]
    lines = [
        f"model {report['model']} on {report['device']} ({info['cpu']}, {info['torch_threads']} threads); "
        f"batch {cfg['batch_size']}, {cfg['steps']} steps after {cfg['warmup']} warm-up, "
        f"max_length {cfg['max_length']}, K={cfg['predictors']}, {', '.join(report.get('precisions') or [report['precision']])}; "
        f"peak memory: {report['memory_method']}",
        "",
    ]
    header = ("mode", "precision", "median s", "min s", "max s", "conv tok/s", "peak MB", "time x reg",
              "paired x reg", "mem x reg", "time x fp32", "tokens run")
    rows = [header]
    by_precision = report.get("precisions") or {report["precision"]: report["modes"]}
    for precision, modes in by_precision.items():
        for name, r in modes.items():
            rows.append((name, precision, _fmt(r["median_step_s"], ".3f"), _fmt(r["min_step_s"], ".3f"),
                         _fmt(r["max_step_s"], ".3f"), _fmt(r["tokens_per_s"], ".0f"), _fmt(r["peak_mem_mb"], ".0f"),
                         _fmt(r.get("step_time_vs_regular"), ".2f"), _fmt(r.get("paired_step_time_vs_regular"), ".2f"),
                         _fmt(r.get("peak_mem_vs_regular"), ".2f"), _fmt(r.get("step_time_vs_fp32"), ".2f"),
                         str(r["processed_tokens"])))
    widths = [max(len(row[k]) for row in rows) for k in range(len(header))]
    lines += ["  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(row, widths))) for row in rows]
    if report.get("eval"):
        e = report["eval"]
        lines += ["", f"generation ({e['examples']} prompts, up to {e['max_new_tokens']} new tokens): "
                  f"batch size 1 {e['batch_size_1']['examples_per_s']:.2f} examples/s, batch size "
                  f"{e['batched']['batch_size']} {e['batched']['examples_per_s']:.2f} examples/s ({e['speedup']:.2f}x)"]
    if report["targets"]:
        lines += ["", "targets:"]
        for t in report["targets"].values():
            sign = "<=" if t["kind"] == "max" else ">="
            lines.append(f"  {t['what']}: {t['value']:.2f} ({sign} {t['limit']}) {'met' if t['met'] else 'MISSED'}")
    return "\n".join(lines)


def run_bench(cfg: BenchConfig) -> int:
    """Measure every requested mode (and generation with --eval); print the table or the JSON; 0."""
    device = resolve_device(cfg.device)
    modes, precisions = cfg.mode_list(), cfg.precision_list()
    memory = {}
    if cfg.isolate:
        for precision in precisions:
            one = replace(cfg, precisions=precision, bf16=False, no_bf16=False)
            for mode in modes:
                print(f"bench: peak memory of {mode} in {precision} (fresh process) ...", file=sys.stderr, flush=True)
                memory[precision, mode] = _run_isolated(one, mode)
    print(f"bench: step times of {', '.join(modes)} in {', '.join(precisions)}, interleaved ...", file=sys.stderr,
          flush=True)
    results = measure_times(cfg, with_memory=not cfg.isolate)
    method = next(iter(memory.values()))["memory_method"] if memory else PeakMemory(device).method + (
        " of each step; modes share one process")
    for precision, by_mode in results.items():
        for mode, result in by_mode.items():
            result.update(memory.get((precision, mode), {}))
            result.pop("memory_method", None)
    report = {
        "model": cfg.model_name + (" (tiny random)" if cfg.tiny else ""),
        "device": device,
        "machine": machine(device),
        "memory_method": method,
        "config": asdict(cfg),
        "precision": precisions[0],
        "modes": results[precisions[0]],
        "precisions": results if len(precisions) > 1 else None,
        "eval": None,
    }
    if cfg.eval:
        print("bench: generation at batch size 1 and batched ...", file=sys.stderr, flush=True)
        report["eval"] = measure_eval(cfg)
    add_ratios(report)
    if cfg.output:
        write_json_atomic(cfg.output, report)
    print(json.dumps(report) if cfg.json else format_report(report))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--memory-worker":
        raise SystemExit(_worker(sys.argv[2], sys.argv[3]))
    from stepjepa.cli import main

    raise SystemExit(main(["bench", *sys.argv[1:]]))
