"""InfoNCE across data-parallel ranks: two gloo processes (DDP on the CPU), each holding part of a batch, against
one process holding the whole batch.

Compared: (1) the Trainer's logged loss, the mean over ranks of each rank's loss, with the single process's loss;
(2) the gradient DDP leaves on every rank (the mean of the ranks' gradients) with the single process's gradient.
Each rank's loss is its share of the whole step's (tokens and pairs of both ranks as divisors) times the world
size, which undoes DDP's mean; so both are equal to float rounding, with no world-size factor left to apply.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port
from test_objective import MAX_LENGTH, batch_chats, grads, setup

from stepjepa.core.examples import RowSettings, build_rows
from stepjepa.core.layout import PackedCollator
from stepjepa.core.losses import jepa_loss
from stepjepa.core.objective import LossScale, Objective, compute_objective

OBJECTIVE = Objective(mode="step_jepa", loss="infonce", lbd=0.7, gamma=1.3)
WORLD = 2
SPLITS = {"two_and_two": [[0, 1], [2, 3]], "rank_without_pairs": [[0, 1, 2], [3]]}  # chat 3 has no pair


def packed_batch(model_dir, chats):
    model, tokenizer, predictor_ids = setup(model_dir, 1)
    rows, _ = build_rows(tokenizer, chats, RowSettings("step_jepa", predictor_ids, None, MAX_LENGTH, "all"))
    return model, PackedCollator(tokenizer.eos_token_id)(rows)


def step_counts(batch) -> tuple[int, int]:
    """(labelled tokens, pairs) of a whole batch: the divisors every rank uses."""
    return int((batch["labels"][:, 1:] != -100).sum()), len(batch["pair_row"])


def rank_step(rank: int, model_dir: str, chats: list, split: list[list[int]]) -> dict:
    """One rank's loss and DDP-averaged gradients for its part of the batch."""
    _, whole = packed_batch(model_dir, chats)
    lm_tokens, pairs = step_counts(whole)
    model, batch = packed_batch(model_dir, [chats[i] for i in split[rank]])
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    out = compute_objective(ddp, batch, OBJECTIVE, scale=LossScale(lm_tokens, pairs, WORLD))
    out.loss.backward()
    return {"loss": out.loss.item(), "grads": grads(model)}


def rank_worker(rank: int, port: int, model_dir: str, chats: list, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(minutes=2))
    # Each DDP model is freed inside rank_step, while the process group lives: a DDP freed after
    # destroy_process_group takes the group down with it and deadlocks on the GIL (seen with torch 2.13, gloo).
    results = {name: rank_step(rank, model_dir, chats, split) for name, split in SPLITS.items()}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_match_one_process_holding_the_whole_batch(tiny_model_dirs, tiny_chats, tmp_path):
    chats = batch_chats(tiny_chats)
    model_dir = str(tiny_model_dirs["llama"])
    mp.spawn(rank_worker, args=(free_port(), model_dir, chats, str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    model, whole = packed_batch(model_dir, chats)
    reference = compute_objective(model, whole, OBJECTIVE)
    reference.loss.backward()
    reference_grads = grads(model)
    for name in SPLITS:
        logged = sum(rank[name]["loss"] for rank in ranks) / WORLD
        assert logged == pytest.approx(reference.loss.item(), rel=1e-5), name
        for rank in ranks:
            assert rank[name]["grads"].keys() == reference_grads.keys()
            for param, grad in reference_grads.items():
                torch.testing.assert_close(rank[name]["grads"][param], grad, rtol=1e-4, atol=1e-6,
                                           msg=lambda m: f"{name} {param}: {m}")

    # The test can tell: with each rank's own pairs as its only negatives, the InfoNCE term is another number.
    halves = [whole["pair_row"] < 2, whole["pair_row"] >= 2]
    local = sum(jepa_loss(reference.view_a[h], reference.view_b[h], "infonce", reduction="sum") for h in halves)
    assert abs(local.item() / len(whole["pair_row"]) - reference.jepa_loss.item()) > 1e-3
