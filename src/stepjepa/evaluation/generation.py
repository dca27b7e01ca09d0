"""Batched generation for evaluation and the bench: chat prompts, left padding, stops at end of turn."""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

import torch

# Chat templates' end-of-turn tokens; generation stops at whichever the tokenizer has.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|end_of_turn|>")


# How a generation ended: at a stop token (end of turn or EOS), or cut at --max_new_tokens.
END_OF_TURN, MAX_NEW_TOKENS = "end_of_turn", "max_new_tokens"


class Generation(NamedTuple):
    """One prompt's reply: its position among the prompts, the text, its token count before any stop token, and
    how it ended (:data:`END_OF_TURN` or :data:`MAX_NEW_TOKENS`)."""

    position: int
    text: str
    tokens: int
    finish: str


def finish_of(new_tokens: list[int], stop_ids: list[int] | set[int]) -> tuple[int, str]:
    """``(reply tokens, finish)`` of one row of ``generate``'s new tokens: the tokens before the first stop token
    and END_OF_TURN, or all of them and MAX_NEW_TOKENS when no stop token came (generation ran to the cap)."""
    cut = next((k for k, t in enumerate(new_tokens) if t in stop_ids), None)
    return (len(new_tokens), MAX_NEW_TOKENS) if cut is None else (cut, END_OF_TURN)


def end_of_turn_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end the assistant's turn: the tokenizer's and model's EOS plus known end-of-turn tokens."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    added = tokenizer.get_added_vocab()
    ids.update(added[token] for token in END_OF_TURN_TOKENS if token in added)
    return sorted(i for i in ids if i is not None)


def render_prompts(tokenizer: Any, chats: list[list[dict[str, str]]]) -> list[list[int]]:
    """Token ids of each chat, formatted by the chat template up to the assistant's turn."""
    texts = [tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) for chat in chats]
    # The template already holds any BOS token; adding special tokens again would double it.
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


@torch.inference_mode()
def iter_generations(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    batch_size: int,
    max_new_tokens: int,
    temperature: float = 0.0,
) -> Iterator[list[Generation]]:
    """Per batch, one :class:`Generation` per prompt; longest prompts first, so batches hold similar lengths."""
    stop_ids = end_of_turn_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {
        "do_sample": False
    }
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in batch)
        # Left padding: every prompt ends at the same column, where generation starts.
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            input_ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            attention_mask[row, width - len(prompts[i]) :] = 1
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            eos_token_id=stop_ids,
            pad_token_id=pad_id,
            use_cache=True,
            **sampling,
        )
        results = []
        for row, i in enumerate(batch):
            new_tokens = output[row, width:].tolist()
            # Finished rows are padded to the batch's length; keep what precedes the first stop token.
            cut, finish = finish_of(new_tokens, stop_ids)
            text = tokenizer.decode(new_tokens[:cut], skip_special_tokens=True).strip()
            results.append(Generation(i, text, cut, finish))
        yield results


def generate_responses(
    model: Any,
    tokenizer: Any,
    chats: list[list[dict[str, str]]],
    batch_size: int = 16,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
) -> list[str]:
    """The model's reply to each chat, in the chats' order."""
    responses = [""] * len(chats)
    prompts = render_prompts(tokenizer, chats)
    for results in iter_generations(model, tokenizer, prompts, batch_size, max_new_tokens, temperature):
        for generation in results:
            responses[generation.position] = generation.text
    return responses
