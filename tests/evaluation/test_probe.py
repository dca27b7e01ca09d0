"""The probe: alignment metrics checked by hand, the views it reads are training's, and the command end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from stepjepa.cli import main, run_command
from stepjepa.evaluation.probe import alignment_metrics, effective_rank, model_predictor_count
from stepjepa.core.examples import RowSettings


def test_alignment_metrics_by_hand() -> None:
    """Three pairs in 2-D, worked by hand.

    a = (1,0), (0,1), (1,1)/sqrt2 ; b = (1,0), (1,0), (0,1)
    cos(a_i, b_j):  row 0: 1, 1, 0 ; row 1: 0, 0, 1 ; row 2: 0.7071, 0.7071, 0.7071
    matched (diagonal) 1, 0, 0.7071 -> mean 0.5690
    mismatched (six off-diagonal) 1, 0, 0, 1, 0.7071, 0.7071 -> mean 3.4142 / 6 = 0.5690
    gap 0. Retrieval: row 0 ties 1 = 1 (a tie counts for the right one) -> rank 0; row 1: the right b scores 0,
    b_2 scores 1 -> rank 1; row 2: all tie -> rank 0. top-1 = 2/3, top-5 = 3/3; chance 1/3 and 3/3.
    """
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    m = alignment_metrics(a, b)
    assert m["pairs"] == 3
    assert m["matched_cosine"] == pytest.approx((1 + 0 + math.sqrt(0.5)) / 3)
    assert m["mismatched_cosine"] == pytest.approx((2 + 2 * math.sqrt(0.5)) / 6)
    assert m["gap"] == pytest.approx(m["matched_cosine"] - m["mismatched_cosine"])
    assert m["top1"] == pytest.approx(2 / 3) and m["top5"] == 1.0
    assert m["chance_top1"] == pytest.approx(1 / 3) and m["chance_top5"] == 1.0
    assert sorted(m["matched_cosines"]) == pytest.approx([0, math.sqrt(0.5), 1])
    assert len(m["mismatched_cosines"]) == 6


def test_perfect_alignment() -> None:
    """b = 2a (same directions): matched cosine 1, every right pair retrieved first."""
    a = torch.eye(4)
    m = alignment_metrics(a, 2 * a)
    assert m["matched_cosine"] == pytest.approx(1.0) and m["mismatched_cosine"] == pytest.approx(0.0)
    assert m["gap"] == pytest.approx(1.0) and m["top1"] == 1.0


def test_effective_rank_by_hand() -> None:
    """Centred rows of diag(3,3,3) minus their mean have two equal non-zero singular values (the third is 0):
    shares 1/2, 1/2, 0, entropy ln 2, effective rank 2. A rank-one set of rows has effective rank 1."""
    rank, spectrum = effective_rank(3 * torch.eye(3))
    assert rank == pytest.approx(2.0)
    assert spectrum == pytest.approx([0.5, 0.5, 0.0], abs=1e-9)
    line = torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    assert effective_rank(line)[0] == pytest.approx(1.0)
    assert effective_rank(torch.ones(3, 2))[0] == 0.0  # identical rows: nothing left after centring


def test_predictor_count(tiny_model_dirs) -> None:
    from stepjepa.models import add_predictor_tokens, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dirs["llama"]))
    assert model_predictor_count(tokenizer) == 0
    add_predictor_tokens(tokenizer, 3)
    assert model_predictor_count(tokenizer) == 3


def test_views_are_the_training_views(tiny_model_dirs, tiny_chats) -> None:
    """The probe's embeddings equal those compute_objective hands the JEPA loss in training (float32)."""
    from stepjepa.core.examples import pack_chat
    from stepjepa.core.layout import PackedCollator
    from stepjepa.core.objective import Objective, compute_objective
    from stepjepa.evaluation.probe import view_embeddings, view_rows
    from stepjepa.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dirs["llama"]))
    model = load_model(str(tiny_model_dirs["llama"])).eval()
    chats = [row["messages"] for row in tiny_chats[:5]]
    rows = view_rows(tokenizer, chats, "step_jepa", [], 256)
    view_a, view_b, lm = view_embeddings(model, tokenizer, rows, "step_jepa", batch_size=2)
    batch = PackedCollator(tokenizer.pad_token_id)([pack_chat(tokenizer, c, RowSettings("step_jepa", [], None, 256)) for c in chats])
    with torch.no_grad():
        out = compute_objective(model, batch, Objective(mode="step_jepa"))
    assert torch.allclose(view_a, out.view_a, atol=1e-5) and torch.allclose(view_b, out.view_b, atol=1e-5)
    # One batch of five against batches of 2, 2, 1: the token-weighted LM loss is the same.
    assert lm == pytest.approx(float(out.lm_loss), rel=1e-4)


@pytest.fixture(scope="module")
def step_jepa_k2_lora(tiny_model_dirs, tiny_chats, tmp_path_factory):
    """A Step-JEPA model with K=2 predictors trained one LoRA step, shared by the merged and adapter cases."""
    work = tmp_path_factory.mktemp("probe-trained")
    chats = work / "train.jsonl"
    chats.write_text("".join(json.dumps(row) + "\n" for row in tiny_chats))
    out = work / "trained"
    argv = ["--train_file", str(chats), "--model_name", str(tiny_model_dirs["llama"]), "--output_dir", str(out),
            "--max_steps", "1", "--batch_size", "4", "--debug", "0", "--step_jepa", "--predictors", "2", "--lora"]
    assert run_command("train", argv) == 0
    return out


# A merged model loads as the base does (a plain model directory): its case is slow; the adapter loads on its base.
@pytest.mark.parametrize("which", ["base", pytest.param("merged", marks=pytest.mark.slow), "adapter"])
def test_probe_command(tiny_model_dirs, step_jepa_k2_lora, chat_file, tmp_path, capsys, which) -> None:
    """Base model: the K0 view only; a Step-JEPA model with K=2 (merged or its adapter): K0 and K2."""
    models = {"base": tiny_model_dirs["llama"], "merged": step_jepa_k2_lora, "adapter": step_jepa_k2_lora / "adapter"}
    model = str(models[which])
    output = tmp_path / "p" / "probe.json"
    assert main(["probe", "--model_path", model, "--test_file", str(chat_file), "--output_file", str(output),
                 "--batch_size", "8", "--no_bf16"]) == 0
    summary = json.loads(output.read_text())
    assert list(summary["views"]) == (["k0"] if which == "base" else ["k0", "k2"])
    assert summary["chats"] == 20 and summary["precision"] == "float32"
    for view in summary["views"].values():
        assert view["pairs"] == 20 and view["chance_top1"] == pytest.approx(0.05)
        assert -1 <= view["gap"] <= 2 and 0 <= view["top1"] <= view["top5"] <= 1
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "K0" in table and "(5.0%)" in table


def test_all_pairs_probe_reports_each_pair_number(tiny_model_dirs, chat_file, tiny_chats, tmp_path, capsys) -> None:
    """Every step -> next pair is a view pair; pair 1's own metrics are those of the first-pair probe."""
    from stepjepa.core.steps import split_steps

    views = {}
    for pairs in ("first", "all"):
        output = tmp_path / pairs / "probe.json"
        assert main(["probe", "--model_path", str(tiny_model_dirs["llama"]), "--test_file", str(chat_file),
                     "--output_file", str(output), "--step_pairs", pairs, "--no_bf16"]) == 0
        views[pairs] = json.loads(output.read_text())["views"]["k0"]
    steps = [len(split_steps(row["messages"][2]["content"])) for row in tiny_chats]  # 3 or 4 each
    by_pair = views["all"]["by_pair"]
    assert views["all"]["pairs"] == sum(n - 1 for n in steps)
    assert by_pair["1"]["pairs"] == by_pair["2"]["pairs"] == 20 and by_pair["3"]["pairs"] == steps.count(4) >= 2
    for key in ("matched_cosine", "mismatched_cosine", "gap", "top1", "top5"):
        assert by_pair["1"][key] == pytest.approx(views["first"][key], abs=1e-5), key
    assert "K0 p3" in capsys.readouterr().out


def test_probe_bad_input(tiny_model_dirs, tmp_path, capsys) -> None:
    """One line and exit 2: too few chats with two steps, predictors the model lacks, a directory as output."""
    one_step = tmp_path / "one_step.jsonl"
    row = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    one_step.write_text((json.dumps(row) + "\n") * 3)
    model = str(tiny_model_dirs["llama"])
    cases = [
        (["--test_file", str(one_step)], "0 of 3 chats have step_jepa views"),
        (["--test_file", str(one_step), "--predictors", "2"], "has 0 predictor tokens"),
        (["--test_file", str(one_step), "--output_file", str(tmp_path)], "is a directory"),
        (["--test_file", str(one_step), "--mode", "regular"], "--mode must be one of"),
        (["--test_file", str(one_step), "--mode", "llm_jepa", "--step_pairs", "all"], "--step_pairs all needs"),
    ]
    for flags, message in cases:
        capsys.readouterr()
        assert main(["probe", "--model_path", model, "--no_bf16", *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one_step.jsonl"]
