"""``stepjepa bench`` on tiny models: the report's keys and sane values, and its ratios.

No timing is asserted: these machines are shared, and the bench exists to measure, not to be measured here.
"""

from __future__ import annotations

import json

import pytest
import torch

from stepjepa.bench.bench import run_bench
from stepjepa.bench.config import MODES, BenchConfig
from stepjepa.bench.modes import file_chats, tiny_model
from stepjepa.bench.report import add_ratios

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
    # The bench measures; the targets are the README's.
    assert "targets" not in report
    # Issue 22's columns: padding, host build share, tokens run per second, MFU, compile time.
    assert report["attention"] == {"implementation": "sdpa", "reason": "auto: no CUDA GPU"}
    for mode, result in modes.items():
        assert 0 <= result["padding_fraction"] < 1, mode
        assert result["build_share"] == pytest.approx(result["median_batch_build_s"] / result["median_step_s"])
        assert result["slots_per_s"] >= result["tokens_per_s"] > 0  # every real token is a slot
        assert 0 < result["mfu"] < 1 and result["matmul_peak_flops"] > 1e8
        assert result["first_step_s"] > 0 and result["compile_s"] >= 0
    # LLM-JEPA's views fill the conversations' padding (or rows of their own): less padding than regular's.
    assert modes["llm_jepa"]["padding_fraction"] < modes["regular"]["padding_fraction"]
    assert modes["step_jepa"]["speedup_vs_multipass"] == pytest.approx(
        modes["step_jepa_multipass"]["median_step_s"] / modes["step_jepa"]["median_step_s"])


def test_table_output_and_synthetic_data(tiny_model_dirs, capsys):
    cfg = BenchConfig(model_name=str(tiny_model_dirs["gpt2"]), batch_size=1, steps=10, warmup=1, max_length=256,
                      isolate=False, modes="regular,step_jepa,llm_jepa,llm_jepa_multipass")
    assert run_bench(cfg) == 0
    table = capsys.readouterr().out
    assert "median s" in table and "llm_jepa_multipass" in table
    for column in ("real tok/s", "slots/s", "pad %", "build %", "MFU %", "compile s"):
        assert column in table
    assert "attention sdpa (auto: no CUDA GPU); matmul peak" in table
    assert "llm_jepa: multi-pass step time / packed" in table
    assert "step_jepa: multi-pass" not in table  # step_jepa_multipass did not run


@pytest.mark.slow  # a child process
def test_isolated_memory_runs_in_a_fresh_process(tiny_model_dirs, chat_file, capsys):
    cfg = tiny_config(tiny_model_dirs["llama"], chat_file, modes="regular", isolate=True)
    assert run_bench(cfg) == 0
    result = json.loads(capsys.readouterr().out)["modes"]["regular"]
    assert result["peak_mem_mb"] >= result["mem_before_steps_mb"] > 0


def test_all_pairs_report_has_its_ratios(tiny_model_dirs, chat_file, capsys):
    cfg = tiny_config(tiny_model_dirs["gpt2"], chat_file, modes="regular,step_jepa_all,step_jepa_all_multipass")
    assert run_bench(cfg) == 0
    report = json.loads(capsys.readouterr().out)
    modes = report["modes"]
    every = modes["step_jepa_all"]
    # More pairs than rows; the same pairs either way; the ratio against regular's tokens is that of the counts.
    assert every["jepa_pairs"] == modes["step_jepa_all_multipass"]["jepa_pairs"] > every["jepa_rows"] > 0
    assert every["processed_tokens_vs_regular"] == every["processed_tokens"] / modes["regular"]["processed_tokens"] > 1
    assert every["time_vs_token_ratio"] == pytest.approx(
        every["step_time_vs_regular"] / every["processed_tokens_vs_regular"])
    assert every["speedup_vs_multipass"] == pytest.approx(
        modes["step_jepa_all_multipass"]["median_step_s"] / every["median_step_s"])


def mode_result(step_s: list[float], peak_mem_mb: float | None, processed_tokens: int, tokens_per_s: float) -> dict:
    return {"step_s": step_s, "median_step_s": sorted(step_s)[len(step_s) // 2], "min_step_s": min(step_s),
            "peak_mem_mb": peak_mem_mb, "processed_tokens": processed_tokens, "tokens_per_s": tokens_per_s}


def test_ratios_worked_by_hand():
    """Three rounds of regular, packed and multi-pass Step-JEPA in two precisions; every ratio checked by hand."""
    fp32 = {"regular": mode_result([2.0, 4.0, 3.0], 100.0, 1000, 50.0),
            "step_jepa": mode_result([2.5, 4.0, 4.5], 120.0, 1250, 40.0),
            "step_jepa_multipass": mode_result([5.0, 8.0, 6.0], 150.0, 2000, 20.0)}
    bf16 = {"regular": mode_result([1.0, 1.0, 3.0], 90.0, 1000, 100.0),
            "step_jepa": mode_result([2.0, 1.0, 4.0], None, 1250, 80.0),
            "step_jepa_multipass": mode_result([2.0, 2.0, 2.0], 99.0, 2000, 40.0)}
    report = {"precision": "fp32", "modes": fp32, "precisions": {"fp32": fp32, "bf16": bf16}}
    add_ratios(report)
    packed = fp32["step_jepa"]
    assert packed["step_time_vs_regular"] == pytest.approx(4.0 / 3.0)  # medians 4.0 and 3.0
    assert packed["min_step_time_vs_regular"] == pytest.approx(2.5 / 2.0)
    assert packed["paired_step_time_vs_regular"] == pytest.approx(1.25)  # median of 1.25, 1.0, 1.5
    assert packed["tokens_per_s_vs_regular"] == pytest.approx(0.8)
    assert packed["peak_mem_vs_regular"] == pytest.approx(1.2)
    assert packed["processed_tokens_vs_regular"] == pytest.approx(1.25)
    assert packed["time_vs_token_ratio"] == pytest.approx((4.0 / 3.0) / 1.25)
    assert packed["speedup_vs_multipass"] == pytest.approx(6.0 / 4.0)
    # bf16 against its own regular (medians 2.0 and 1.0) and against fp32.
    assert bf16["step_jepa"]["step_time_vs_regular"] == pytest.approx(2.0)
    assert bf16["step_jepa"]["peak_mem_vs_regular"] is None  # no peak was read
    assert bf16["step_jepa"]["step_time_vs_fp32"] == pytest.approx(2.0 / 4.0)
    assert bf16["step_jepa"]["paired_step_time_vs_fp32"] == pytest.approx(0.8)  # median of 0.8, 0.25, 0.889
    assert bf16["step_jepa_multipass"]["peak_mem_vs_fp32"] == pytest.approx(99.0 / 150.0)
    assert "step_time_vs_fp32" not in fp32["step_jepa"]


def test_gsm8k_rows_become_chats_with_blank_line_steps(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    row = {"question": "Q?", "answer": "A has 2 + 3 = <<2+3=5>>5.\nB has 5 * 2 = <<5*2=10>>10.\n#### 10"}
    path.write_text(json.dumps(row) + "\n")
    (messages,) = file_chats(str(path))
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[2]["content"] == "A has 2 + 3 = 5.\n\nB has 5 * 2 = 10.\nThe answer is \\boxed{10}."


def test_tiny_shrinks_the_model_of_either_family(tiny_model_dir):
    model = tiny_model(str(tiny_model_dir))
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, model.config.vocab_size)


def test_eval_compares_batch_size_one_with_batched(tiny_model_dirs, chat_file):
    from stepjepa.bench.measure import measure_eval

    cfg = tiny_config(tiny_model_dirs["llama"], chat_file, eval=True, eval_examples=4, eval_batch_size=4,
                      eval_max_new_tokens=3)
    result = measure_eval(cfg)
    assert result["examples"] == 4
    single, batched = result["batch_size_1"], result["batched"]
    assert single["batch_size"] == 1 and batched["batch_size"] == 4
    for run in (single, batched):  # each batch size ran twice (order 1, N, N, 1); examples/s from the mean time
        assert len(run["seconds_runs"]) == 2 and run["seconds"] == pytest.approx(sum(run["seconds_runs"]) / 2)
        assert run["examples_per_s"] == pytest.approx(4 / run["seconds"])
    assert result["speedup"] == pytest.approx(single["seconds"] / batched["seconds"])


@pytest.mark.parametrize("flags,message", [
    (dict(steps=9), "--steps"),
    (dict(modes="regular,fast"), "--modes"),
    (dict(modes="regular,regular"), "--modes"),
    (dict(eval_batch_size=1), "--eval_batch_size"),
    (dict(batch_size=0), "--batch_size"),
    (dict(predictors=-1), "--predictors"),
    (dict(device="tpu"), "--device"),
    (dict(data_file="/nonexistent.jsonl"), "--data_file"),
    (dict(attn_implementation="flash"), "--attn_implementation"),
])
def test_bad_flags_are_usage_errors(flags, message):
    with pytest.raises(ValueError, match=message):
        BenchConfig(**flags)


# --- issue 22's columns, by hand ------------------------------------------------------------------------------------


def test_padding_fraction_of_a_known_batch(tiny_model_dirs, tiny_chats):
    """Two conversations of 3 and 5 tokens in a batch 5 wide: 2 of 10 slots are padding. The bench's regular
    batches: their placed tokens are the conversation tokens (nothing else is placed)."""
    from stepjepa.bench.modes import build_batches, padding_fraction
    from stepjepa.core.layout import PackedCollator, pack_regular
    from stepjepa.core.tokenization import EncodedChat

    rows = [pack_regular(EncodedChat(ids, [-100] + ids[1:], 1, [], False)) for ids in ([5, 6, 7], [5, 6, 7, 8, 9])]
    batch = {**PackedCollator(pad_token_id=0)(rows), "placed_tokens": 8}
    assert batch["input_ids"].shape == (2, 5)
    assert padding_fraction("regular", batch) == pytest.approx(0.2)

    from stepjepa.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dirs["llama"]))
    chats = [row["messages"] for row in tiny_chats[:4]]
    cfg = BenchConfig(model_name=str(tiny_model_dirs["llama"]), batch_size=2, max_length=256)
    for built in build_batches(cfg, "regular", tokenizer, chats, [])[0]:
        lengths = (built["labels"] != -100).long().cumsum(1).argmax(1) + 1  # each row's last labelled column + 1
        assert built["placed_tokens"] == built["num_tokens"] == int(lengths.sum())
        assert padding_fraction("regular", built) == pytest.approx(1 - int(lengths.sum()) / built["input_ids"].numel())
    multipass = {"input_ids": torch.zeros(2, 4), "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
                 "view_b_ids": torch.zeros(2, 3), "view_b_mask": torch.tensor([[1, 1, 1], [1, 0, 0]])}
    assert padding_fraction("step_jepa_multipass", multipass) == pytest.approx(4 / 14)  # 6 + 4 of 14 slots placed


def test_model_flops_by_hand():
    """A GPT-2 of width 8, one layer, 16 tokens, 32 positions, tied head. Matmul parameters: c_attn 8*24+24, attn
    c_proj 8*8+8, c_fc 8*32+32, mlp c_proj 32*8+8, three layer norms 3*16, and the head 16*8 (the embedding
    lookups wte, wpe excluded): 216 + 72 + 288 + 264 + 48 + 128 = 1016. Per token over 100 positions:
    6 * 1016 + 12 * 1 * 8 * 100 = 15696."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from stepjepa.bench.measure import matmul_parameters, model_flops_per_token

    model = GPT2LMHeadModel(GPT2Config(vocab_size=16, n_embd=8, n_layer=1, n_head=2, n_positions=32))
    assert matmul_parameters(model) == 1016
    assert model_flops_per_token(1016, 1, 8, 100) == 15696
    # PaLM's count for a 1.07e9-parameter model of 16 layers, width 2048, at 512 tokens: 6.42e9 + 2.01e8.
    assert model_flops_per_token(1_070_000_000, 16, 2048, 512) == 6_420_000_000 + 201_326_592


def test_an_explicit_flex_on_the_cpu_is_refused_before_anything_loads(tiny_model_dirs):
    if torch.cuda.is_available():
        pytest.skip("the CPU refusal")
    cfg = BenchConfig(model_name=str(tiny_model_dirs["llama"]), attn_implementation="flex_attention", isolate=False)
    with pytest.raises(ValueError, match="flex_attention needs a CUDA GPU"):
        run_bench(cfg)


@pytest.mark.slow  # a child process profiling five steps
def test_the_profile_script_finds_no_read_back_in_forward_or_backward(tmp_path):
    """scripts/profile_step.py on the CPU: its phases are named, and the step's forward and backward read nothing
    back (the CPU's fused AdamW reads its step counters; on the CPU that waits for nothing)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "profile_step.py"
    trace = tmp_path / "trace.json"
    done = subprocess.run([sys.executable, str(script), "--tiny", "--steps", "2", "--warmup", "1", "--batch_size", "2",
                           "--max_length", "256", "--trace", str(trace)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("host read-backs per step"))
    assert "forward" not in line and "backward" not in line
    assert "attention sdpa (auto: no CUDA GPU)" in done.stdout and trace.stat().st_size > 0


def test_packed_bench_fills_rows_with_several_conversations(tiny_model_dirs, chat_file, capsys):
    """--packing: the same row count as unpacked (batch size x steps), more conversation tokens in them, and
    less of each row padding; the multi-pass modes are left out by default and refused when named."""
    reports = {}
    for packing in (False, True):
        cfg = tiny_config(tiny_model_dirs["gpt2"], chat_file, packing=packing, modes="regular,step_jepa")
        assert run_bench(cfg) == 0
        reports[packing] = json.loads(capsys.readouterr().out)["modes"]
    for mode in ("regular", "step_jepa"):
        plain, packed = reports[False][mode], reports[True][mode]
        assert plain["rows"] == packed["rows"] == 20
        assert packed["conversation_tokens"] > 1.5 * plain["conversation_tokens"]  # chats of ~100 tokens, rows of 256
        assert packed["processed_tokens"] <= 20 * 256 * (1.15 if mode == "step_jepa" else 1)
        padding = {k: 1 - r["conversation_tokens"] / r["processed_tokens"] for k, r in ((0, plain), (1, packed))}
        assert padding[1] < padding[0]
    assert reports[True]["step_jepa"]["jepa_pairs"] > reports[False]["step_jepa"]["jepa_pairs"]
    assert BenchConfig(packing=True).mode_list() == ["regular", "llm_jepa", "step_jepa"]
    with pytest.raises(ValueError, match="--packing packs the single-pass modes only; drop step_jepa_multipass"):
        BenchConfig(packing=True, modes="regular,step_jepa_multipass")
    with pytest.raises(ValueError, match="--pack_length needs --packing"):
        BenchConfig(pack_length=128)
