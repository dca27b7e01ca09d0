"""Model loading: the embedded GGUF model, local directories, predictor tokens, LoRA targets."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from stepjepa.models import (
    EMBEDDED_ALIAS,
    _gguf_file,
    add_predictor_tokens,
    apply_lora,
    load_model,
    load_tokenizer,
    resize_for_tokenizer,
    resolve_model_path,
)


def test_local_directory_resolves_to_itself(tiny_model_dirs):
    assert resolve_model_path(str(tiny_model_dirs["gpt2"])) == str(tiny_model_dirs["gpt2"])


def test_predictor_tokens_are_special_and_idempotent(tiny_model_dirs):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["llama"])
    size = len(tokenizer)
    ids = add_predictor_tokens(tokenizer, 2)
    assert ids == [size, size + 1] and add_predictor_tokens(tokenizer, 2) == ids
    assert tokenizer("x<|predictor_2|>", add_special_tokens=False).input_ids[-1] == ids[1]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"])
    resize_for_tokenizer(model, tokenizer)
    assert model.get_input_embeddings().weight.shape[0] == size + 2


def test_lora_targets_every_linear_projection_but_the_head(tiny_model_dirs):
    model = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"]), rank=4)
    wrapped = {name.split(".")[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert model.peft_config["default"].lora_alpha == 8
    gpt2 = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["gpt2"]), rank=4)
    wrapped = {name.split(".")[-1] for name, module in gpt2.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == {"c_attn", "c_proj", "c_fc"}


@pytest.mark.embedded
@pytest.mark.slow
def test_embedded_model_rebuilt_from_gguf_gives_identical_logits():
    """The cached float32 checkpoint equals the GGUF-loaded (quantisation-flagged) model."""
    gguf = _gguf_file(EMBEDDED_ALIAS)
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    model = load_model(EMBEDDED_ALIAS).eval()
    tokenizer = load_tokenizer(EMBEDDED_ALIAS)
    assert getattr(model, "hf_quantizer", None) is None
    assert "quantization_config" not in model.config.to_dict()
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False)
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


@pytest.mark.parametrize("raised, message", [
    (OSError("offline"), "is neither a local directory nor reachable on the Hugging Face hub"),
    (ValueError("Unrecognized configuration class FooConfig for this kind of AutoModel"),
     "model 'owner/not-a-causal-lm' cannot be loaded: ValueError: Unrecognized configuration class FooConfig"),
])
def test_only_hub_and_network_errors_read_as_unreachable(monkeypatch, raised, message):
    import stepjepa.models

    def refuse(*args, **kwargs):
        raise raised

    monkeypatch.setattr(stepjepa.models.AutoModelForCausalLM, "from_pretrained", refuse)
    with pytest.raises(ValueError) as caught:
        load_model("owner/not-a-causal-lm")
    assert message in str(caught.value)
    assert ("reachable" in str(caught.value)) == isinstance(raised, OSError)


def test_loading_and_growing_a_model_prints_no_bar_and_no_library_notice(tiny_model_dirs, capfd, tmp_path):
    """The console of a sweep: no "Loading weights" bar per load (transformers draws one when asked plainly, the
    control), no mean_resizing notice, no peft FutureWarning, no peft notice when the adapter is saved with the grown
    embeddings; transformers' own settings restored afterwards."""
    import warnings

    from transformers.utils import logging as hf_logging

    AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"])
    assert "Loading weights" in capfd.readouterr().err  # the control: the bar is there without stepjepa's switch
    verbosity = hf_logging.get_verbosity()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(str(tiny_model_dirs["llama"]))
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["llama"])
        add_predictor_tokens(tokenizer, 2)
        resize_for_tokenizer(model, tokenizer)
        apply_lora(model, rank=4).save_pretrained(tmp_path / "adapter")  # as a Trainer checkpoint saves it
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "multivariate normal" not in err
    assert not [w for w in caught if issubclass(w.category, FutureWarning) or "save_embedding_layers" in str(w.message)]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert hf_logging.is_progress_bar_enabled() and hf_logging.get_verbosity() == verbosity
