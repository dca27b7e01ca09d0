"""``stepjepa bench`` on tiny models: the report's keys and sane values, and the multi-pass baseline's losses.

No timing is asserted: these machines are shared, and the bench exists to measure, not to be measured here.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from stepjepa.bench import MODES, BenchConfig, _file_chats, build_batches, multipass_objective, run_bench, tiny_model
from stepjepa.examples import pack_chat
from stepjepa.layout import PackedCollator
from stepjepa.models import add_predictor_tokens, load_tokenizer, resize_for_tokenizer
from stepjepa.objective import Objective, compute_objective

MODE_KEYS = {"median_step_s", "min_step_s", "max_step_s", "tokens_per_s", "peak_mem_mb"}


def tiny_config(model_dir, chat_file, **overrides) -> BenchConfig:
    values = dict(model_name=str(model_dir), data_file=str(chat_file), batch_size=2, steps=10, warmup=1,
                  max_length=256, isolate=False, json=True)
    return BenchConfig(**{**values, **overrides})


def test_json_report_has_the_documented_keys_and_sane_values(tiny_model_dirs, chat_file, tmp_path, capsys):
    output = tmp_path / "bench.json"
    assert run_bench(tiny_config(tiny_model_dirs["llama"], chat_file, output=str(output))) == 0
    report = json.loads(capsys.readouterr().out)  # stdout is exactly one JSON object
    assert report == json.loads(output.read_text())
    assert {"model", "device", "modes"} <= report.keys() and report["device"] == "cpu"
    assert list(report["modes"]) == list(MODES)
    for mode, result in report["modes"].items():
        assert MODE_KEYS <= result.keys(), mode
        assert 0 < result["min_step_s"] <= result["median_step_s"] <= result["max_step_s"]
        assert len(result["step_s"]) == 10
        assert result["tokens_per_s"] > 0 and result["peak_mem_mb"] > 0
        assert result["rows"] == 20
    modes = report["modes"]
    # Throughput credits conversation tokens only: the same batches count the same in every mode.
    assert len({r["conversation_tokens"] for r in modes.values()}) == 1
    # The view blocks are extra tokens run through the model; multi-pass repeats the context as well.
    processed = {mode: r["processed_tokens"] for mode, r in modes.items()}
    assert processed["regular"] < processed["step_jepa"] < processed["step_jepa_multipass"]
    assert processed["regular"] < processed["llm_jepa"]
    assert modes["regular"]["jepa_rows"] == 0
    assert modes["step_jepa"]["jepa_rows"] == modes["step_jepa_multipass"]["jepa_rows"] > 0
    assert modes["regular"]["step_time_vs_regular"] == modes["regular"]["paired_step_time_vs_regular"] == 1.0
    assert modes["step_jepa"]["speedup_vs_multipass"] > 0
    assert {"step_jepa_time_vs_regular", "llm_jepa_time_vs_regular", "step_jepa_speedup_vs_multipass",
            "step_jepa_mem_vs_regular"} == report["targets"].keys()


def test_table_output_and_synthetic_data(tiny_model_dirs, capsys):
    cfg = BenchConfig(model_name=str(tiny_model_dirs["gpt2"]), batch_size=1, steps=10, warmup=1, max_length=256,
                      isolate=False, modes="regular,step_jepa,llm_jepa,llm_jepa_multipass")
    assert run_bench(cfg) == 0
    table = capsys.readouterr().out
    assert "median s" in table and "llm_jepa_multipass" in table and "Step-JEPA step time / regular" in table
    assert "multi-pass step time" not in table  # that target needs both step_jepa modes


@pytest.mark.slow  # a child process
def test_isolated_memory_runs_in_a_fresh_process(tiny_model_dirs, chat_file, capsys):
    cfg = tiny_config(tiny_model_dirs["llama"], chat_file, modes="regular", isolate=True)
    assert run_bench(cfg) == 0
    result = json.loads(capsys.readouterr().out)["modes"]["regular"]
    assert result["peak_mem_mb"] >= result["mem_before_steps_mb"] > 0


@pytest.mark.parametrize("mode", ["step_jepa", "llm_jepa"])
@pytest.mark.parametrize("num_predictors", [0, 2])
def test_multipass_computes_the_packed_losses(tiny_model_dir, chat_file, mode, num_predictors):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    predictor_ids = add_predictor_tokens(tokenizer, num_predictors) if num_predictors else []
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    resize_for_tokenizer(model, tokenizer)
    chats = _file_chats(str(chat_file))[:4]
    cfg = tiny_config(tiny_model_dir, chat_file, batch_size=4, predictors=num_predictors)
    (multipass,), _ = build_batches(cfg, f"{mode}_multipass", tokenizer, chats, predictor_ids)
    objective = Objective(mode=mode, lbd=0.7, gamma=1.3)
    rows = [pack_chat(tokenizer, m, mode, predictor_ids, None, cfg.max_length) for m in chats]
    packed = compute_objective(model, PackedCollator(tokenizer.pad_token_id)(rows), objective)
    straightforward = multipass_objective(model, multipass, objective)
    tol = dict(rtol=1e-4, atol=1e-5)
    for name in ("loss", "lm_loss", "jepa_loss", "view_a", "view_b"):
        torch.testing.assert_close(getattr(straightforward, name), getattr(packed, name), **tol, msg=name)


@pytest.mark.parametrize("num_predictors", [0, 2])
def test_all_pairs_multipass_computes_the_packed_losses(tiny_model_dir, chat_file, num_predictors):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    predictor_ids = add_predictor_tokens(tokenizer, num_predictors) if num_predictors else []
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    resize_for_tokenizer(model, tokenizer)
    chats = _file_chats(str(chat_file))[:4]
    cfg = tiny_config(tiny_model_dir, chat_file, batch_size=4, predictors=num_predictors)
    (multipass,), _ = build_batches(cfg, "step_jepa_all_multipass", tokenizer, chats, predictor_ids)
    (packed_batch,), _ = build_batches(cfg, "step_jepa_all", tokenizer, chats, predictor_ids)
    assert len(multipass["view_rows"]) == len(packed_batch["pair_row"]) > len(chats)  # several pairs per chat
    objective = Objective(mode="step_jepa", lbd=0.7, gamma=1.3)
    packed = compute_objective(model, packed_batch, objective)
    straightforward = multipass_objective(model, multipass, objective)
    tol = dict(rtol=1e-4, atol=1e-5)
    for name in ("loss", "lm_loss", "jepa_loss", "view_a", "view_b"):
        torch.testing.assert_close(getattr(straightforward, name), getattr(packed, name), **tol, msg=name)


def test_all_pairs_report_has_its_targets(tiny_model_dirs, chat_file, capsys):
    cfg = tiny_config(tiny_model_dirs["gpt2"], chat_file, modes="regular,step_jepa_all,step_jepa_all_multipass")
    assert run_bench(cfg) == 0
    report = json.loads(capsys.readouterr().out)
    modes = report["modes"]
    every = modes["step_jepa_all"]
    # More pairs than rows; the same pairs either way; the ratio against regular's tokens is that of the counts.
    assert every["jepa_pairs"] == modes["step_jepa_all_multipass"]["jepa_pairs"] > every["jepa_rows"] > 0
    assert every["processed_tokens_vs_regular"] == every["processed_tokens"] / modes["regular"]["processed_tokens"] > 1
    targets = report["targets"]
    assert {"step_jepa_all_time_vs_token_ratio", "step_jepa_all_speedup_vs_multipass"} == targets.keys()
    ratio = targets["step_jepa_all_time_vs_token_ratio"]
    assert ratio["value"] == pytest.approx(every["step_time_vs_regular"] / every["processed_tokens_vs_regular"])
    assert ratio["limit"] == 1.05 and ratio["met"] == (ratio["value"] <= 1.05)


def test_gsm8k_rows_become_chats_with_blank_line_steps(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    row = {"question": "Q?", "answer": "A has 2 + 3 = <<2+3=5>>5.\nB has 5 * 2 = <<5*2=10>>10.\n#### 10"}
    path.write_text(json.dumps(row) + "\n")
    (messages,) = _file_chats(str(path))
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[2]["content"] == "A has 2 + 3 = 5.\n\nB has 5 * 2 = 10.\nThe answer is \\boxed{10}."


def test_tiny_shrinks_the_model_of_either_family(tiny_model_dir):
    model = tiny_model(str(tiny_model_dir))
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, model.config.vocab_size)


def test_eval_compares_batch_size_one_with_batched(tiny_model_dirs, chat_file):
    pytest.importorskip("stepjepa.evaluate")
    from stepjepa.bench import measure_eval

    cfg = tiny_config(tiny_model_dirs["llama"], chat_file, eval=True, eval_examples=4, eval_batch_size=4,
                      eval_max_new_tokens=3)
    result = measure_eval(cfg)
    assert result["examples"] == 4
    assert result["batch_size_1"]["examples_per_s"] > 0 and result["batched"]["batch_size"] == 4
    assert result["speedup"] > 0


@pytest.mark.parametrize("flags,message", [
    (dict(steps=9), "--steps"),
    (dict(modes="regular,fast"), "--modes"),
    (dict(modes="regular,regular"), "--modes"),
    (dict(eval_batch_size=1), "--eval_batch_size"),
    (dict(batch_size=0), "--batch_size"),
    (dict(predictors=-1), "--predictors"),
    (dict(device="tpu"), "--device"),
    (dict(data_file="/nonexistent.jsonl"), "--data_file"),
])
def test_bad_flags_are_usage_errors(flags, message):
    with pytest.raises(ValueError, match=message):
        BenchConfig(**flags)
