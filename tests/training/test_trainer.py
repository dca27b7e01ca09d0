"""The trainer's own bookkeeping, method by method: the JEPA dropout draw, the reduction of each step's token-
and pair-weighted sums to the period's means (over ranks too), and the lines the metrics callback writes. No
training step runs here."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, TrainerControl, TrainerState, TrainingArguments

import stepjepa.training.trainer as trainer_module
from stepjepa.core.objective import Objective, ObjectiveOutput
from stepjepa.training.trainer import JepaTrainer, MetricsFileCallback


@pytest.fixture(scope="module")
def tiny_gpt2() -> GPT2LMHeadModel:
    return GPT2LMHeadModel(GPT2Config(vocab_size=16, n_embd=8, n_layer=1, n_head=2, n_positions=32))


def make_trainer(model, tmp_path, jepa_ratio: float = -1.0, seed: int = 42) -> JepaTrainer:
    args = TrainingArguments(output_dir=str(tmp_path), seed=seed, report_to=[], use_cpu=True, disable_tqdm=True)
    return JepaTrainer(model=model, args=args, objective=Objective(), jepa_ratio=jepa_ratio)


def draws(trainer: JepaTrainer, steps: range, micro_batches: int = 1) -> list[bool]:
    """The draws of ``micro_batches`` micro-batches at each optimizer step of ``steps``, in order."""
    out = []
    for step in steps:
        trainer.state.global_step = step
        out.extend(trainer._draw_jepa(micro) for micro in range(micro_batches))
    return out


# --- the JEPA dropout draw ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [-1.0, 0.0, 1.0])
def test_outside_zero_one_every_batch_gets_jepa(tiny_gpt2, tmp_path, ratio):
    """-1 (the default) and 0 mean "always" (the flag's help: <= 0), 1 is a certain draw."""
    assert draws(make_trainer(tiny_gpt2, tmp_path, ratio), range(50)) == [True] * 50


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.9])
def test_the_fraction_of_jepa_batches_is_the_ratio(tiny_gpt2, tmp_path, ratio):
    """2000 draws: the binomial standard deviation is at most sqrt(0.5 * 0.5 / 2000) = 0.011; 0.035 is > 3 of them."""
    drawn = draws(make_trainer(tiny_gpt2, tmp_path, ratio), range(2000))
    assert sum(drawn) / len(drawn) == pytest.approx(ratio, abs=0.035)


def test_draws_repeat_per_seed_and_differ_between_seeds(tiny_gpt2, tmp_path):
    first = draws(make_trainer(tiny_gpt2, tmp_path, 0.5, seed=1), range(100))
    again = draws(make_trainer(tiny_gpt2, tmp_path, 0.5, seed=1), range(100))
    other = draws(make_trainer(tiny_gpt2, tmp_path, 0.5, seed=2), range(100))
    assert first == again
    assert first != other


def test_a_resumed_run_draws_what_the_straight_run_drew(tiny_gpt2, tmp_path):
    """Two micro-batches per step: a trainer that starts at step 30 (a resume) draws the straight run's
    draws for steps 30-59, micro-batch by micro-batch."""
    straight = draws(make_trainer(tiny_gpt2, tmp_path, 0.5), range(60), micro_batches=2)
    resumed = draws(make_trainer(tiny_gpt2, tmp_path, 0.5), range(30, 60), micro_batches=2)
    assert resumed == straight[60:]


def test_each_micro_batch_of_a_step_draws_on_its_own(tiny_gpt2, tmp_path):
    """With two micro-batches per step, the two draws of a step differ in some steps (about half of them at
    ratio 0.5): the micro-batch index is part of the draw, and it restarts at 0 with each step."""
    drawn = draws(make_trainer(tiny_gpt2, tmp_path, 0.5), range(100), micro_batches=2)
    pairs = list(zip(drawn[0::2], drawn[1::2]))
    assert 20 <= sum(a != b for a, b in pairs) <= 80
    # The first micro-batch of each step draws what a one-micro-batch run draws at that step.
    single = draws(make_trainer(tiny_gpt2, tmp_path, 0.5), range(100))
    assert [a for a, _ in pairs] == single


# --- sums to means: known micro-batches in, logged values and metrics.jsonl out -------------------------------------


class Clock:
    """Stands in for time.perf_counter: returns ``now``, which the test moves."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def logging_trainer(model, tmp_path, monkeypatch, clock: Clock) -> JepaTrainer:
    """A trainer writing its logs to ``tmp_path`` (metrics.jsonl, eval_metrics.jsonl), created at ``clock.now``."""
    monkeypatch.setattr(trainer_module.time, "perf_counter", clock)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, disable_tqdm=True)
    return JepaTrainer(model=model, args=args, objective=Objective(), callbacks=[MetricsFileCallback(str(tmp_path))])


def micro_batch(trainer: JepaTrainer, monkeypatch, step: int, lm: float, lm_tokens: int, jepa: float | None = None,
                pairs: int = 0, tokens: int = 0, split: str = "train") -> None:
    """One micro-batch through the trainer's compute_loss at optimizer step ``step``, its packed pass replaced by
    a known result: LM mean ``lm`` over ``lm_tokens`` labelled tokens, JEPA mean ``jepa`` over ``pairs`` pairs
    (None: no JEPA term), ``tokens`` conversation tokens."""
    result = ObjectiveOutput(loss=torch.tensor(lm + (jepa or 0.0)), lm_loss=torch.tensor(lm),
                             jepa_loss=None if jepa is None else torch.tensor(jepa), view_a=None, view_b=None,
                             lm_tokens=lm_tokens, pairs=pairs)
    monkeypatch.setattr(trainer_module, "compute_objective", lambda *args, **kwargs: result)
    trainer.state.global_step = step
    trainer.model.train(split == "train")
    inputs = {"use_jepa": jepa is not None, "pair_row": torch.zeros(0, dtype=torch.long), "num_tokens": tokens}
    trainer.compute_loss(trainer.model, inputs)


def test_log_turns_the_periods_sums_into_means(tiny_gpt2, tmp_path, monkeypatch):
    """One step: LM mean 2.5 over 4 labelled tokens, JEPA 0.4 over 2 pairs; 300 conversation tokens in the 2 s
    since the trainer started -> 150 tokens/s. The next period starts from zero: its one step, LM 1.0 over 1
    token, 30 tokens in 3 s, logs 1.0 (not (10 + 1) / 5 = 2.2), no JEPA, 10 tokens/s."""
    clock = Clock(100.0)
    trainer = logging_trainer(tiny_gpt2, tmp_path, monkeypatch, clock)
    micro_batch(trainer, monkeypatch, step=0, lm=2.5, lm_tokens=4, jepa=0.4, pairs=2, tokens=300)
    trainer.state.global_step = 1
    clock.now = 102.0
    trainer.log({"loss": 2.58})
    logged = trainer.state.log_history[-1]
    assert (logged["loss"], logged["lm_loss"], logged["jepa_loss"], logged["tokens_per_s"]) == (2.58, 2.5, 0.4, 150.0)

    micro_batch(trainer, monkeypatch, step=1, lm=1.0, lm_tokens=1, tokens=30)
    trainer.state.global_step = 2
    clock.now = 105.0
    trainer.log({"loss": 1.0})
    assert lines(tmp_path / "metrics.jsonl") == [
        {"step": 1, "lm_loss": 2.5, "jepa_loss": 0.4, "loss": 2.58, "grad_norm": None, "learning_rate": None,
         "tokens_per_s": 150.0},
        {"step": 2, "lm_loss": 1.0, "jepa_loss": None, "loss": 1.0, "grad_norm": None, "learning_rate": None,
         "tokens_per_s": 10.0},
    ]


def test_a_period_averages_its_steps_each_weighted_within(tiny_gpt2, tmp_path, monkeypatch):
    """Step 1, two micro-batches: LM 2.5 over 2 tokens and 1.0 over 1 token -> (5 + 1) / 3 = 2.0 (token-weighted,
    not (2.5 + 1) / 2 = 1.75). Step 2: LM 1.0 over 1 token twice -> 1.0; JEPA 0.2 over 1 pair and 0.35 over 2
    pairs -> (0.2 + 0.7) / 3 = 0.3. The period logs the mean of its steps, LM (2.0 + 1.0) / 2 = 1.5, as the
    Trainer averages ``loss`` over them (not all tokens at once, 8 / 5 = 1.6); JEPA only in step 2: 0.3."""
    trainer = logging_trainer(tiny_gpt2, tmp_path, monkeypatch, Clock(0.0))
    micro_batch(trainer, monkeypatch, step=1, lm=2.5, lm_tokens=2, tokens=10)
    micro_batch(trainer, monkeypatch, step=1, lm=1.0, lm_tokens=1, tokens=10)
    micro_batch(trainer, monkeypatch, step=2, lm=1.0, lm_tokens=1, jepa=0.2, pairs=1, tokens=10)
    micro_batch(trainer, monkeypatch, step=2, lm=1.0, lm_tokens=1, jepa=0.35, pairs=2, tokens=10)
    trainer.log({"loss": 1.5})
    logged = trainer.state.log_history[-1]
    assert logged["lm_loss"] == pytest.approx(1.5) and logged["jepa_loss"] == pytest.approx(0.3)
    [row] = lines(tmp_path / "metrics.jsonl")
    assert (row["lm_loss"], row["jepa_loss"]) == (pytest.approx(1.5), pytest.approx(0.3))


def test_a_period_without_jepa_batches_logs_no_jepa_loss(tiny_gpt2, tmp_path, monkeypatch):
    """jepa_ratio dropped the term in every batch: no JEPA mean (not 0/0, not 0; the metrics file writes
    null, trackers take numbers only); LM 1.5 over 3 tokens and 1.5 over 1 -> 1.5."""
    trainer = logging_trainer(tiny_gpt2, tmp_path, monkeypatch, Clock(0.0))
    micro_batch(trainer, monkeypatch, step=0, lm=1.5, lm_tokens=3, tokens=30)
    micro_batch(trainer, monkeypatch, step=0, lm=1.5, lm_tokens=1, tokens=5)
    trainer.log({"loss": 1.5})
    logged = trainer.state.log_history[-1]
    assert logged["lm_loss"] == 1.5 and "jepa_loss" not in logged
    assert lines(tmp_path / "metrics.jsonl")[0]["jepa_loss"] is None


def test_eval_logs_get_eval_means_from_the_eval_sums(tiny_gpt2, tmp_path, monkeypatch):
    """Eval micro-batches (LM 1.0 over 1 token and 1.6 over 3 -> (1 + 4.8) / 4 = 1.45; JEPA 0.3 over 2 pairs)
    at any step are one evaluation: eval_lm_loss 1.45, eval_jepa_loss 0.3, no throughput. The training step
    before it (LM 9.0 over 1 token) is left for the next training log: lm_loss 9.0."""
    trainer = logging_trainer(tiny_gpt2, tmp_path, monkeypatch, Clock(0.0))
    micro_batch(trainer, monkeypatch, step=4, lm=9.0, lm_tokens=1, tokens=10)
    micro_batch(trainer, monkeypatch, step=4, lm=1.0, lm_tokens=1, jepa=0.3, pairs=2, tokens=20, split="eval")
    micro_batch(trainer, monkeypatch, step=5, lm=1.6, lm_tokens=3, tokens=20, split="eval")
    trainer.log({"eval_loss": 1.43})
    logged = trainer.state.log_history[-1]
    assert logged["eval_lm_loss"] == pytest.approx(1.45) and logged["eval_jepa_loss"] == pytest.approx(0.3)
    assert "tokens_per_s" not in logged and "lm_loss" not in logged
    assert lines(tmp_path / "eval_metrics.jsonl") == [
        {"step": 5, "eval_loss": 1.43, "eval_lm_loss": pytest.approx(1.45), "eval_jepa_loss": pytest.approx(0.3)}]
    trainer.log({"loss": 9.0})
    assert trainer.state.log_history[-1]["lm_loss"] == 9.0 and "jepa_loss" not in trainer.state.log_history[-1]
    # A second evaluation starts from nothing: LM 2.0 over 1 token, no JEPA.
    micro_batch(trainer, monkeypatch, step=6, lm=2.0, lm_tokens=1, tokens=20, split="eval")
    trainer.log({"eval_loss": 2.0})
    assert lines(tmp_path / "eval_metrics.jsonl")[-1] == {"step": 6, "eval_loss": 2.0, "eval_lm_loss": 2.0,
                                                          "eval_jepa_loss": None}


def test_a_log_without_loss_passes_through_and_keeps_the_sums(tiny_gpt2, tmp_path, monkeypatch):
    """The Trainer's end-of-training summary (no "loss" key) is not a metrics period: it gets no means and
    writes no line, and the step's LM 1.5 over 2 tokens is logged by the next log with a loss."""
    trainer = logging_trainer(tiny_gpt2, tmp_path, monkeypatch, Clock(0.0))
    micro_batch(trainer, monkeypatch, step=0, lm=1.5, lm_tokens=2, tokens=8)
    trainer.log({"train_runtime": 1.0})
    assert "lm_loss" not in trainer.state.log_history[-1]
    assert not (tmp_path / "metrics.jsonl").exists()
    trainer.log({"loss": 1.5})
    assert trainer.state.log_history[-1]["lm_loss"] == 1.5


def test_sums_are_added_over_ranks_before_dividing(tiny_gpt2, tmp_path, monkeypatch):
    """Rank 0: LM 1.5 over 2 tokens, JEPA 0.2 over 1 pair, 70 tokens; rank 1: LM 3.0 over 1 token, JEPA 0.6 over
    1 pair, 50 tokens. Over both: LM (3 + 3) / (2 + 1) = 2.0, not the mean of the ranks' means (1.5 + 3) / 2 =
    2.25; JEPA (0.2 + 0.6) / 2 = 0.4; 120 tokens in 1 s. Each rank hands its numbers to a sum-reduce; rank 0's
    returns its own plus rank 1's, which logged first (call by call: a log may reduce more than one tensor)."""
    monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: 2))
    handed = {0: [], 1: []}  # rank -> the tensors it handed to reduce, in order

    def reduce_of(rank: int):
        def reduce(values, reduction):
            assert reduction == "sum"
            handed[rank].append(values.clone())
            return values if rank == 1 else values + handed[1][len(handed[0]) - 1]
        return reduce

    clock = Clock(10.0)
    ranks = []
    for rank, (lm, lm_tokens, jepa, tokens) in enumerate([(1.5, 2, 0.2, 70), (3.0, 1, 0.6, 50)]):
        trainer = logging_trainer(tiny_gpt2, tmp_path / f"rank{rank}", monkeypatch, clock)
        monkeypatch.setattr(trainer.accelerator, "reduce", reduce_of(rank))
        micro_batch(trainer, monkeypatch, step=0, lm=lm, lm_tokens=lm_tokens, jepa=jepa, pairs=1, tokens=tokens)
        ranks.append(trainer)
    clock.now = 11.0
    ranks[1].log({"loss": 3.6})
    ranks[0].log({"loss": 2.08})
    assert [t.shape for t in handed[0]] == [t.shape for t in handed[1]]  # the same reduces on both ranks
    logged = ranks[0].state.log_history[-1]
    assert (logged["lm_loss"], logged["jepa_loss"], logged["tokens_per_s"]) == (2.0, 0.4, 120.0)


# --- the metrics file ---------------------------------------------------------------------------------------------


def on_log(callback: MetricsFileCallback, logs: dict, step: int = 3, rank_zero: bool = True) -> None:
    state = TrainerState(global_step=step, is_world_process_zero=rank_zero)
    callback.on_log(None, state, TrainerControl(), logs=logs)


def lines(path) -> list[dict]:
    return [json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in {path}"))
            for line in path.read_text().splitlines()] if path.exists() else []


def test_a_training_log_becomes_one_line_with_the_documented_keys(tmp_path):
    callback = MetricsFileCallback(str(tmp_path))
    on_log(callback, {"loss": 1.5, "lm_loss": 1.2, "jepa_loss": 3.0, "grad_norm": 0.5, "learning_rate": 1e-4,
                      "tokens_per_s": 10.0, "epoch": 0.25}, step=3)
    on_log(callback, {"loss": 1.1, "lm_loss": 1.1, "learning_rate": 5e-5, "tokens_per_s": 9.0}, step=4)
    assert (tmp_path / "metrics.jsonl").read_text().splitlines()[0] == (
        '{"step": 3, "lm_loss": 1.2, "jepa_loss": 3.0, "loss": 1.5, "grad_norm": 0.5, "learning_rate": 0.0001, '
        '"tokens_per_s": 10.0}')
    # Missing keys (no grad_norm; no JEPA term in the window) are null, not left out.
    assert lines(tmp_path / "metrics.jsonl")[1] == {"step": 4, "lm_loss": 1.1, "jepa_loss": None, "loss": 1.1,
                                                    "grad_norm": None, "learning_rate": 5e-5, "tokens_per_s": 9.0}
    assert not (tmp_path / "eval_metrics.jsonl").exists()


def test_non_finite_values_are_written_as_null(tmp_path):
    callback = MetricsFileCallback(str(tmp_path))
    on_log(callback, {"loss": 2.0, "lm_loss": 2.0, "jepa_loss": 0.1, "grad_norm": float("inf"),
                      "learning_rate": 1e-4, "tokens_per_s": float("nan")})
    row = lines(tmp_path / "metrics.jsonl")[0]
    assert (row["grad_norm"], row["tokens_per_s"], row["loss"]) == (None, None, 2.0)


def test_eval_logs_go_to_their_own_file_with_their_eval_keys(tmp_path):
    callback = MetricsFileCallback(str(tmp_path))
    on_log(callback, {"eval_loss": 2.0, "eval_lm_loss": 1.9, "eval_jepa_loss": float("nan"), "eval_runtime": 0.5,
                      "epoch": 1.0}, step=10)
    assert lines(tmp_path / "eval_metrics.jsonl") == [
        {"step": 10, "eval_loss": 2.0, "eval_lm_loss": 1.9, "eval_jepa_loss": None, "eval_runtime": 0.5}]
    assert not (tmp_path / "metrics.jsonl").exists()


def test_an_eval_without_jepa_batches_writes_a_null_jepa_loss(tmp_path):
    callback = MetricsFileCallback(str(tmp_path))
    on_log(callback, {"eval_loss": 2.0, "eval_lm_loss": 2.0}, step=5)
    assert lines(tmp_path / "eval_metrics.jsonl") == [
        {"step": 5, "eval_loss": 2.0, "eval_lm_loss": 2.0, "eval_jepa_loss": None}]


@pytest.mark.parametrize("logs", [
    {"train_runtime": 3.0, "train_loss": 1.2},  # the end-of-training summary
    {"loss": 1.0},  # a loss the trainer's log did not turn into means
    {},
])
def test_other_logs_write_nothing(tmp_path, logs):
    on_log(MetricsFileCallback(str(tmp_path)), logs)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_only_the_main_process_writes(tmp_path):
    on_log(MetricsFileCallback(str(tmp_path)), {"loss": 1.0, "lm_loss": 1.0}, rank_zero=False)
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize("stopping", [True, False])
def test_the_last_step_is_always_logged(stopping):
    control = TrainerControl(should_training_stop=stopping)
    MetricsFileCallback("unused").on_step_end(None, TrainerState(), control)
    assert control.should_log is stopping


# --- collapse diagnostics -------------------------------------------------------------------------------------


def fake_objective(monkeypatch, outputs: list[tuple[list, list] | None]) -> None:
    """compute_objective stands in: each call returns the next micro-batch's view embeddings (None: no pairs)."""
    from stepjepa.core.objective import ObjectiveOutput

    calls = iter(outputs)

    def compute_objective(model, inputs, objective, use_jepa=True, scale=None):
        views = next(calls)
        one = torch.tensor(1.0)
        if views is None:
            return ObjectiveOutput(one, one, None, None, None, lm_tokens=2, pairs=0)
        a, b = (torch.tensor(v, requires_grad=True) for v in views)
        return ObjectiveOutput(one, one, one, a, b, lm_tokens=2, pairs=len(a))

    monkeypatch.setattr(trainer_module, "compute_objective", compute_objective)


def train_batches(trainer: JepaTrainer, count: int) -> None:
    trainer.model.train()
    for _ in range(count):
        trainer.compute_loss(trainer.model, {"use_jepa": True, "pair_row": torch.tensor([0]), "num_tokens": 4})


def test_the_window_logs_collapse_statistics_of_its_pairs(tiny_gpt2, tmp_path, monkeypatch):
    """Micro-batch 1: a = b = e1, e2; micro-batch 2: a = e1, b = -e1; one without pairs. view_b e1, e2, -e1: cosines
    0, -1, 0 -> -1/3. Matched 1, 1, -1 (mean 1/3), mismatched within batch 1: 0, 0 -> gap 1/3. view_a e1, e2, e1 per
    dimension: (1, 0, 1) and (0, 1, 0), each std sqrt(2/3 - 4/9) = sqrt(2)/3 = 0.471405; view_b (1, 0, -1) std
    sqrt(2/3) = 0.816497 and (0, 1, 0) std 0.471405: mean 0.643951. The next window starts empty."""
    eye = [[1.0, 0.0], [0.0, 1.0]]
    fake_objective(monkeypatch, [(eye, eye), ([[1.0, 0.0]], [[-1.0, 0.0]]), None])
    trainer = make_trainer(tiny_gpt2, tmp_path)
    train_batches(trainer, 3)
    trainer.log({"loss": 1.0})
    logged = trainer.state.log_history[-1]
    assert logged["view_b_mean_cosine"] == pytest.approx(-1 / 3, abs=1e-6)
    assert logged["cosine_gap"] == pytest.approx(1 / 3, abs=1e-6)
    assert logged["view_a_dim_std"] == pytest.approx(0.471405, abs=1e-6)
    assert logged["view_b_dim_std"] == pytest.approx(0.643951, abs=1e-6)
    assert trainer._collapse["train"] is None
    trainer.log({"loss": 1.0})  # a window without JEPA pairs: no collapse statistics
    assert not {"view_b_mean_cosine", "cosine_gap"} & trainer.state.log_history[-1].keys()


def test_collapse_sums_stay_on_the_device_until_the_log(tiny_gpt2, tmp_path, monkeypatch):
    """compute_loss only adds tensors; the statistics (a read-back) come at log time."""
    fake_objective(monkeypatch, [([[1.0, 0.0]], [[0.0, 1.0]])])
    monkeypatch.setattr(trainer_module, "collapse_statistics", lambda sums: pytest.fail("read back in the step"))
    trainer = make_trainer(tiny_gpt2, tmp_path)
    train_batches(trainer, 1)
    assert isinstance(trainer._collapse["train"], torch.Tensor) and not trainer._collapse["train"].requires_grad


def test_collapse_sums_are_added_over_ranks(tiny_gpt2, tmp_path, monkeypatch):
    """Rank 0 saw no pair and sends zeros of the sums' width (tiny gpt2: D = 8, 4 + 4 * 8 = 36); rank 1 saw a = b =
    e1, e2 (in 8 dimensions): over both, the view_b cosine 0 and the gap 1."""
    trainer = make_trainer(tiny_gpt2, tmp_path)
    eye = torch.eye(2, 8)
    other_rank = trainer_module.collapse_sums(eye, eye)
    sent = []

    def reduce(values, reduction):
        sent.append(values.clone())
        return values + other_rank

    monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: 2))
    monkeypatch.setattr(trainer.accelerator, "reduce", reduce)
    assert trainer._period_collapse("train") == pytest.approx(
        {"view_b_mean_cosine": 0.0, "view_a_dim_std": 2 * 0.5 / 8, "view_b_dim_std": 2 * 0.5 / 8, "cosine_gap": 1.0})
    assert sent[0].tolist() == [0.0] * 36


def test_collapse_statistics_follow_in_the_metrics_line(tmp_path):
    callback = MetricsFileCallback(str(tmp_path))
    on_log(callback, {"loss": 1.5, "lm_loss": 1.2, "jepa_loss": 0.3, "learning_rate": 1e-4, "tokens_per_s": 10.0,
                      "view_b_mean_cosine": 0.9, "view_a_dim_std": 0.01, "view_b_dim_std": 0.02, "cosine_gap": 0.003})
    assert lines(tmp_path / "metrics.jsonl") == [
        {"step": 3, "lm_loss": 1.2, "jepa_loss": 0.3, "loss": 1.5, "grad_norm": None, "learning_rate": 1e-4,
         "tokens_per_s": 10.0, "view_b_mean_cosine": 0.9, "view_a_dim_std": 0.01, "view_b_dim_std": 0.02,
         "cosine_gap": 0.003}]


def test_evaluation_logs_its_own_collapse_statistics(tiny_gpt2, tmp_path, monkeypatch):
    """Evaluation batches (a = b = e1, e2: view_b cosine 0, gap 1) go to the eval_ keys; training's window is apart."""
    eye = [[1.0, 0.0], [0.0, 1.0]]
    fake_objective(monkeypatch, [(eye, eye)])
    trainer = make_trainer(tiny_gpt2, tmp_path)
    trainer.model.eval()
    trainer.compute_loss(trainer.model, {"pair_row": torch.tensor([0]), "num_tokens": 4})
    trainer.log({"eval_loss": 1.0})
    logged = trainer.state.log_history[-1]
    assert (logged["eval_view_b_mean_cosine"], logged["eval_cosine_gap"]) == (0.0, 1.0)
    assert "view_b_mean_cosine" not in logged and trainer._collapse == {"train": None, "eval": None}
