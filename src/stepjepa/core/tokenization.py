"""Chat tokenisation: labels on the assistant turn (end-of-turn included), step spans, single-message views."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from stepjepa.core.errors import UsageError
from stepjepa.core.steps import step_char_spans

IGNORE_INDEX = -100


@dataclass
class EncodedChat:
    """A tokenised conversation; spans are ``[start, end)`` token indices into ``input_ids``."""

    input_ids: list[int]
    labels: list[int]
    prompt_length: int  # tokens before the assistant's first content token
    step_spans: list[tuple[int, int]]  # each step with its trailing separator, whole steps only
    truncated: bool


@dataclass
class EncodedView:
    """One message rendered alone by the chat template (an LLM-JEPA view)."""

    input_ids: list[int]
    last_content_index: int  # the message's last content token; -1 when truncation cut it


def _content_span(text: str, content: str, start: int) -> tuple[int, int]:
    """Character span of ``content`` in the rendered ``text``, searched from ``start``."""
    # Some templates trim the content; then match the trimmed form.
    for candidate in (content, content.strip()):
        where = text.find(candidate, start)
        if where >= 0:
            return where, where + len(candidate)
    raise UsageError("the chat template changes the message text; cannot locate the message's content")


def _token_starts(offsets: list[tuple[int, int]]) -> list[int]:
    return [start for start, _ in offsets]


def _char_span_to_tokens(starts: list[int], char_start: int, char_end: int) -> tuple[int, int]:
    """Tokens whose first character lies in ``[char_start, char_end)``."""
    return bisect_right(starts, char_start - 1), bisect_right(starts, char_end - 1)


def encode_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict], max_length: int) -> EncodedChat:
    """Tokenise a chat; labels cover the assistant's content and its end-of-turn token, the rest is -100.

    Steps are found on the assistant's text and mapped to tokens with the offset mapping: a token
    belongs to the step holding its first character.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    prefix = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    search_from = len(prefix) if text.startswith(prefix) else 0
    content_start, content_end = _content_span(text, messages[-1]["content"], search_from)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoding["input_ids"]), [tuple(o) for o in encoding["offset_mapping"]]
    starts = _token_starts(offsets)

    first = bisect_right(starts, content_start - 1)
    after = bisect_right(starts, content_end - 1)  # first token starting at or after the content end
    special = set(tokenizer.all_special_ids)
    end_of_turn = next((i for i in range(after, len(ids)) if ids[i] in special), None)
    if end_of_turn is None:
        # A template without an end-of-turn marker: teach the model to stop with EOS.
        ids.append(tokenizer.eos_token_id)
        end_of_turn = len(ids) - 1
    labels = [IGNORE_INDEX] * len(ids)
    labels[first : end_of_turn + 1] = ids[first : end_of_turn + 1]

    step_spans = []
    for char_start, char_end in step_char_spans(text[content_start:content_end]):
        span = _char_span_to_tokens(starts, content_start + char_start, content_start + char_end)
        if span[1] > span[0]:
            step_spans.append(span)

    truncated = len(ids) > max_length
    if truncated:
        ids, labels = ids[:max_length], labels[:max_length]
        step_spans = [span for span in step_spans if span[1] <= max_length]
    return EncodedChat(ids, labels, first, step_spans, truncated)


def encode_view(tokenizer: PreTrainedTokenizerBase, message: dict, max_length: int) -> EncodedView:
    """Render one message alone with the chat template; find its last content token."""
    try:
        text = tokenizer.apply_chat_template([message], tokenize=False)
    except Exception as exc:  # templates may refuse a lone message (e.g. strict role alternation)
        raise UsageError(f"the chat template cannot render a lone {message['role']} message: {exc}") from None
    _, content_end = _content_span(text, message["content"], 0)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])
    last = bisect_right(_token_starts([tuple(o) for o in encoding["offset_mapping"]]), content_end - 1) - 1
    if len(ids) > max_length:
        ids = ids[:max_length]
        last = last if last < max_length else -1
    return EncodedView(ids, last)
