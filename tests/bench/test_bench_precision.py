"""``stepjepa bench`` in two precisions: both timed on the same batches, bf16 really autocast, ratios as defined."""

from __future__ import annotations

import json

import pytest
import torch

from stepjepa.bench.bench import run_bench
from stepjepa.bench.config import BenchConfig
from stepjepa.bench.measure import StepRunner
from stepjepa.bench.modes import bench_chats, build_batches


def tiny_config(model_dir, chat_file, **overrides) -> BenchConfig:
    values = dict(model_name=str(model_dir), data_file=str(chat_file), batch_size=2, steps=10, warmup=1,
                  max_length=256, isolate=False, json=True, modes="regular,step_jepa")
    return BenchConfig(**{**values, **overrides})


def test_two_precisions_side_by_side(tiny_model_dirs, chat_file, capsys) -> None:
    assert run_bench(tiny_config(tiny_model_dirs["llama"], chat_file, precisions="fp32,bf16")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "fp32" and list(report["precisions"]) == ["fp32", "bf16"]
    assert report["modes"] == report["precisions"]["fp32"]
    fp32, bf16 = report["precisions"]["fp32"], report["precisions"]["bf16"]
    for mode in ("regular", "step_jepa"):
        assert len(bf16[mode]["step_s"]) == len(fp32[mode]["step_s"]) == 10
        # The same batches in both precisions.
        assert bf16[mode]["processed_tokens"] == fp32[mode]["processed_tokens"]
        assert bf16[mode]["step_time_vs_fp32"] == pytest.approx(bf16[mode]["median_step_s"] / fp32[mode]["median_step_s"])
        # Each precision against its own regular.
        assert bf16[mode]["step_time_vs_regular"] == pytest.approx(
            bf16[mode]["median_step_s"] / bf16["regular"]["median_step_s"])
        assert "step_time_vs_fp32" not in fp32[mode]


def test_bf16_runner_autocasts(tiny_model_dirs, chat_file) -> None:
    """One step of the bf16 runner and of the float32 runner from the same weights on the same batch: the
    updated weights differ (the bf16 step really ran under autocast) but stay float32."""
    cfg = tiny_config(tiny_model_dirs["llama"], chat_file, learning_rate=1e-2)
    runners = {bf16: StepRunner(cfg, "cpu", bf16=bf16) for bf16 in (False, True)}
    chats = bench_chats(cfg, runners[False].tokenizer)
    batch = build_batches(cfg, "step_jepa", runners[False].tokenizer, chats, runners[False].predictor_ids)[0][0]
    before = runners[False].model.lm_head.weight.detach().clone()
    assert torch.equal(before, runners[True].model.lm_head.weight)
    for runner in runners.values():
        runner.step("step_jepa", batch)
    after = {bf16: runner.model.lm_head.weight.detach() for bf16, runner in runners.items()}
    assert not torch.equal(after[False], before)
    assert not torch.equal(after[True], after[False])
    assert after[True].dtype == torch.float32


@pytest.mark.parametrize("flags, message", [
    (dict(precisions="fp32,fp16"), "--precisions"),
    (dict(precisions="bf16,bf16"), "--precisions"),
    (dict(precisions="fp32,bf16", bf16=True), "drop --bf16/--no_bf16"),
    (dict(bf16=True, no_bf16=True), "contradict"),
])
def test_bad_precision_flags(flags, message) -> None:
    with pytest.raises(ValueError, match=message):
        BenchConfig(**flags)


def test_flags_pick_one_precision() -> None:
    assert BenchConfig(bf16=True).precision_list() == ["bf16"]
    assert BenchConfig(no_bf16=True).precision_list() == ["fp32"]
    assert BenchConfig(precisions="bf16, fp32").precision_list() == ["bf16", "fp32"]
