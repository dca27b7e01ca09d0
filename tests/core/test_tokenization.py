"""Labels, end-of-turn, step spans and single-message views from real chat templates."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from stepjepa.core.steps import split_steps
from stepjepa.core.tokenization import IGNORE_INDEX, encode_chat, encode_view

EOT = {"llama": "<|eot_id|>", "gpt2": "<|im_end|>"}


def chat(assistant: str) -> list[dict]:
    return [
        {"role": "system", "content": "Solve step by step."},
        {"role": "user", "content": "Ann has 3 pens and buys 4 more. How many pens?"},
        {"role": "assistant", "content": assistant},
    ]


@pytest.fixture(params=["llama", "gpt2"])
def family_tokenizer(request, tiny_model_dirs):
    return request.param, AutoTokenizer.from_pretrained(tiny_model_dirs[request.param])


def test_labels_cover_assistant_content_and_end_of_turn(family_tokenizer):
    family, tokenizer = family_tokenizer
    content = "Ann starts with 3 pens.\n\nShe has 3 + 4 = 7 pens.\n\nThe answer is \\boxed{7}."
    encoded = encode_chat(tokenizer, chat(content), 512)
    labelled = [t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX]
    assert labelled == [label for label in encoded.labels if label != IGNORE_INDEX]
    assert tokenizer.decode(labelled) == content + EOT[family]
    # Nothing before the assistant's content is labelled, and labels are contiguous.
    first = encoded.labels.index(labelled[0])
    assert first == encoded.prompt_length
    assert all(label != IGNORE_INDEX for label in encoded.labels[first : first + len(labelled)])


@pytest.mark.parametrize(
    "content",
    [
        "Ann starts with 3 pens.\n\nShe buys 4 more, so 3 + 4 = 7.\n\nThe answer is \\boxed{7}.",
        "First line.\nStill step one!\n\nStep two: 3 + 4 = 7\n\n\nThen \\boxed{7}",  # single newline inside, triple blank
        "Ann starts with 3 pens:\n\n  She buys 4 more.\n\nDone",  # colon, indented step 2
    ],
)
def test_step2_span_decodes_to_step2_and_separator(family_tokenizer, content):
    """The Llama-3-style tokenizer merges the blank line into the punctuation before it ('.\\n\\n')."""
    _, tokenizer = family_tokenizer
    encoded = encode_chat(tokenizer, chat(content), 512)
    steps = split_steps(content)
    (s1_start, s1_end), (s2_start, s2_end) = encoded.step_spans[:2]
    separator_after_step2 = content[content.index(steps[1]) + len(steps[1]) :].split(steps[2])[0]
    assert tokenizer.decode(encoded.input_ids[s2_start:s2_end]) == steps[1] + separator_after_step2
    assert tokenizer.decode(encoded.input_ids[s1_start:s1_end]) == content[: content.index(steps[1])]
    assert len(encoded.step_spans) == 3


def test_llama_tokenizer_really_merges_the_blank_line(tiny_model_dirs):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["llama"])
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("pens.\n\nShe", add_special_tokens=False).input_ids)
    assert ".ĊĊ" in pieces


def test_truncation_keeps_only_whole_steps(family_tokenizer):
    _, tokenizer = family_tokenizer
    content = "Ann starts with 3 pens.\n\nShe buys 4 more, so 3 + 4 = 7 pens.\n\nThe answer is \\boxed{7}."
    full = encode_chat(tokenizer, chat(content), 512)
    cut = full.step_spans[1][1] - 1  # one token short of step 2's end
    encoded = encode_chat(tokenizer, chat(content), cut)
    assert encoded.truncated and len(encoded.input_ids) == cut
    assert encoded.step_spans == full.step_spans[:1]


def test_view_last_content_token(family_tokenizer):
    _, tokenizer = family_tokenizer
    view = encode_view(tokenizer, {"role": "user", "content": "How many pens?"}, 512)
    assert tokenizer.decode(view.input_ids[: view.last_content_index + 1]).endswith("How many pens?")
    assert not tokenizer.decode(view.input_ids[view.last_content_index + 1 :]).strip("\n").startswith("?")
    assert tokenizer.decode(view.input_ids[view.last_content_index + 1 :]).strip() in ("<|eot_id|>", "<|im_end|>")


@pytest.mark.embedded
@pytest.mark.slow
def test_smollm2_blank_line_splits_into_two_newlines():
    """SmolLM2: encode('\\n\\n') is one token, but inside text the blank line is two '\\n' tokens."""
    from stepjepa.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    content = "Ann starts with 3 pens.\n\nShe buys 4 more, so 7.\n\nThe answer is \\boxed{7}."
    encoded = encode_chat(tokenizer, chat(content), 512)
    s2_start, s2_end = encoded.step_spans[1]
    assert tokenizer.decode(encoded.input_ids[s2_start:s2_end]) == "She buys 4 more, so 7.\n\n"
    assert encoded.input_ids[s2_end - 2 : s2_end] == [198, 198]
