"""Token- and pair-weighted losses: one batch of 4 and two micro-batches of 2 accumulated give one gradient, that
of the token-mean LM loss and pair-mean JEPA loss over the 4 examples (the oracle's separate passes)."""

from __future__ import annotations

import pytest
import torch
from test_objective import MAX_LENGTH, batch_chats, grads, oracle, setup
from transformers import TrainerCallback, TrainingArguments

from stepjepa.core.examples import RowSettings, build_rows
from stepjepa.core.layout import PackedCollator
from stepjepa.core.objective import LossScale, Objective, compute_objective
from stepjepa.training.trainer import JepaTrainer

OBJECTIVE = Objective(mode="step_jepa", loss="cosine", lbd=0.7, gamma=1.3)


class GradientsBeforeStep(TrainerCallback):
    """Keeps the accumulated gradients as the optimizer is about to use them."""

    def __init__(self):
        self.grads: dict[str, torch.Tensor] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def one_step(model_dir, chats, tmp_path, batch_size: int, grad_accum: int) -> tuple[dict, float]:
    """The gradient and loss of one optimizer step of the JepaTrainer over all of ``chats``."""
    model, tokenizer, predictor_ids = setup(model_dir, 1)
    rows, _ = build_rows(tokenizer, chats, RowSettings("step_jepa", predictor_ids, None, MAX_LENGTH))
    assert len(rows) == batch_size * grad_accum
    args = TrainingArguments(
        output_dir=str(tmp_path / f"b{batch_size}x{grad_accum}"), per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, max_steps=1, learning_rate=1e-3, max_grad_norm=0.0, use_cpu=True,
        remove_unused_columns=False, label_names=["labels"], save_strategy="no", logging_strategy="no",
        report_to=[], disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    capture = GradientsBeforeStep()
    tokenizer.pad_token = tokenizer.eos_token  # as load_tokenizer does
    trainer = JepaTrainer(model=model, args=args, train_dataset=rows, data_collator=PackedCollator(
        tokenizer.pad_token_id), processing_class=tokenizer, callbacks=[capture], objective=OBJECTIVE)
    result = trainer.train()
    return capture.grads, result.training_loss


def test_batch_4_and_2_by_accumulation_2_give_the_oracle_gradient(tiny_model_dirs, tiny_chats, tmp_path):
    chats = batch_chats(tiny_chats)  # three chats with one (first) pair each, the fourth LM only
    whole, whole_loss = one_step(tiny_model_dirs["llama"], chats, tmp_path, 4, 1)
    accumulated, accumulated_loss = one_step(tiny_model_dirs["llama"], chats, tmp_path, 2, 2)

    model, tokenizer, predictor_ids = setup(tiny_model_dirs["llama"], 1)
    loss, _, _, _ = oracle(model, tokenizer, chats, "step_jepa", predictor_ids, "cosine", lbd=0.7, gamma=1.3)
    loss.backward()
    reference = grads(model)

    assert whole.keys() == accumulated.keys() == reference.keys() and reference
    for name in reference:
        torch.testing.assert_close(accumulated[name], whole[name], rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")
        torch.testing.assert_close(whole[name], reference[name], rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
    assert whole_loss == pytest.approx(loss.item(), rel=1e-5)
    assert accumulated_loss == pytest.approx(loss.item(), rel=1e-5)


def test_mean_of_micro_batch_means_is_a_different_gradient(tiny_model_dirs, tiny_chats):
    """Without the step's divisors, two halves of 2 (one with 2 pairs, one with 1 pair, unequal tokens) averaged
    give another gradient: the test above would catch a per-micro-batch mean."""
    model, tokenizer, predictor_ids = setup(tiny_model_dirs["llama"], 1)
    chats = batch_chats(tiny_chats)
    collator = PackedCollator(tokenizer.eos_token_id)
    halves = [collator(build_rows(tokenizer, part, RowSettings("step_jepa", predictor_ids, None, MAX_LENGTH))[0])
              for part in (chats[:2], chats[2:])]
    assert [len(half["pair_row"]) for half in halves] == [2, 1]
    for half in halves:
        (compute_objective(model, half, OBJECTIVE).loss / 2).backward()
    naive = grads(model)
    scale = LossScale(lm_tokens=sum(int((h["labels"][:, 1:] != -100).sum()) for h in halves), pairs=3)
    for half in halves:
        compute_objective(model, half, OBJECTIVE, scale=scale).loss.backward()
    weighted = grads(model)
    oracle(model, tokenizer, chats, "step_jepa", predictor_ids, "cosine", lbd=0.7, gamma=1.3)[0].backward()
    reference = grads(model)
    for name in reference:
        torch.testing.assert_close(weighted[name], reference[name], rtol=1e-4, atol=1e-5)
    assert max(float((naive[n] - reference[n]).abs().max()) for n in reference) > 1e-3
