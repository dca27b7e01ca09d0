"""Packed rows on datasets: the cache key, cached rows equal to freshly built ones, parallel tokenizing, the start
line, and the metrics a tracker (tensorboard) receives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stepjepa.cli import run_command
from stepjepa.core.examples import build_rows
from stepjepa.core.layout import PackedCollator
from stepjepa.data import cache as dataset_cache
from stepjepa.data import load_chats
from stepjepa.data.cache import ExpandingCollator, RowSettings, compact_row, expand_row, packed_rows, plan_shards
from stepjepa.models import add_predictor_tokens, load_tokenizer

STEP = RowSettings("step_jepa", (), None, 512, "first")


def entries(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir() if not p.name.startswith(".")}


@pytest.fixture
def data_file(tmp_path, tiny_chats) -> Path:
    """The tiny chats with a blank line after the third (example indices skip no number, line numbers do)."""
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(row) + "\n" for row in tiny_chats]
    path.write_text("".join(lines[:3]) + "\n" + "".join(lines[3:]))
    return path


def test_cache_key_hits_on_same_settings_and_misses_on_template_k_max_length_data(tiny_model_dirs, data_file,
                                                                                   tmp_path):
    cache = tmp_path / "cache"
    tokenizer = load_tokenizer(str(tiny_model_dirs["llama"]))
    first = packed_rows(data_file, tokenizer, "llama", STEP, cache_dir=cache)
    assert not first.cache_hit and first.processes == 1 and len(entries(cache)) == 1
    again = packed_rows(data_file, load_tokenizer(str(tiny_model_dirs["llama"])), "llama", STEP, cache_dir=cache)
    assert again.cache_hit and again.location == first.location and again.processes == 0

    def misses(tok, settings, path=data_file) -> bool:
        before = entries(cache)
        rows = packed_rows(path, tok, "llama", settings, cache_dir=cache)
        return not rows.cache_hit and len(entries(cache)) == len(before) + 1

    assert misses(tokenizer, RowSettings("step_jepa", (), None, 64, "first"))  # max_length
    assert misses(tokenizer, RowSettings("step_jepa", (), None, 512, "all"))  # step pairs
    assert misses(tokenizer, RowSettings("llm_jepa", (), None, 512, "first"))  # mode
    with_k = load_tokenizer(str(tiny_model_dirs["llama"]))
    ids = tuple(add_predictor_tokens(with_k, 2))
    assert misses(with_k, RowSettings("step_jepa", ids, None, 512, "first"))  # K (and the grown vocabulary)
    templated = load_tokenizer(str(tiny_model_dirs["llama"]))
    templated.chat_template = templated.chat_template.replace("|>\n\n", "|>\n")
    assert templated.chat_template != tokenizer.chat_template
    assert misses(templated, STEP)  # the chat template
    changed = tmp_path / "changed.jsonl"
    changed.write_text(data_file.read_text() + data_file.read_text().splitlines()[0] + "\n")
    assert misses(tokenizer, STEP, changed)  # the data file's content
    assert len(packed_rows(changed, tokenizer, "llama", STEP, cache_dir=cache).dataset) == len(first.dataset) + 1
    # The same content under another name is the same data.
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(data_file.read_bytes())
    assert packed_rows(copy, tokenizer, "llama", STEP, cache_dir=cache).cache_hit
    # --no_data_cache neither reads nor writes the cache.
    before = entries(cache)
    bypass = packed_rows(data_file, tokenizer, "llama", STEP, cache_dir=cache, use_cache=False)
    assert not bypass.cache_hit and bypass.location is None and entries(cache) == before
    assert [bypass.row(i) for i in range(len(bypass.dataset))] == [first.row(i) for i in range(len(first.dataset))]


SETTINGS = [("regular", 0, None, 512, "first"), ("llm_jepa", 2, None, 512, "first"), ("llm_jepa", 1, -2, 60, "first"),
            ("step_jepa", 2, None, 512, "first"), ("step_jepa", 1, None, 70, "all"), ("step_jepa", 0, None, 512, "random")]


# Two tokenizing processes (child processes): the slow tier.
@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_cached_rows_equal_freshly_built_rows(tiny_model_dir, data_file, tmp_path, monkeypatch, processes):
    # Small shards so that two processes each tokenize several (the file is ~5 KB).
    monkeypatch.setattr(dataset_cache, "SHARD_BYTES", 700)
    for mode, k, last_token, max_length, pairs in SETTINGS:
        tokenizer = load_tokenizer(str(tiny_model_dir))
        ids = add_predictor_tokens(tokenizer, k) if k else []
        settings = RowSettings(mode, tuple(ids), last_token, max_length, pairs)
        packed = packed_rows(data_file, tokenizer, "tiny", settings, cache_dir=tmp_path / "c", num_proc=processes)
        assert packed.processes == processes
        fresh, counts = build_rows(tokenizer, load_chats(data_file), RowSettings(mode, ids, last_token, max_length, pairs))
        for row in fresh:
            del row["regions"]  # debug-only: not stored
        assert [packed.row(i) for i in range(len(packed.dataset))] == fresh
        # The Trainer's path: the DataLoader's batched read of stored rows, expanded by the collator.
        collator = PackedCollator(tokenizer.pad_token_id)
        batch = ExpandingCollator(collator)(packed.dataset.__getitems__([2, 0]))
        expected = collator([fresh[2], fresh[0]])
        assert batch.keys() == expected.keys() and all(torch.equal(batch[k], expected[k]) for k in batch)
        assert dict(packed.counts) == dict(counts)
        assert packed.tokens == sum(len(row["input_ids"]) for row in fresh)
        cached = packed_rows(data_file, tokenizer, "tiny", settings, cache_dir=tmp_path / "c", num_proc=processes)
        assert cached.cache_hit and [cached.row(i) for i in range(len(fresh))] == fresh


def test_shards_end_at_line_ends_and_count_examples(tmp_path):
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"aaaa\n\nbb\n\x1c \ncccccc\nd")  # lines 1..6; 2 and 4 blank (str.strip takes \x1c too)
    shards, examples = plan_shards(path, 6)
    assert examples == 4
    # "aaaa\n\n" reaches 6 bytes after line 2; "bb\n  \n" after line 4; "cccccc\n" after line 5; "d" is the rest.
    assert shards == [{"start": 0, "end": 6, "first_line": 1, "first_example": 0},
                      {"start": 6, "end": 12, "first_line": 3, "first_example": 1},
                      {"start": 12, "end": 19, "first_line": 5, "first_example": 2},
                      {"start": 19, "end": 20, "first_line": 6, "first_example": 3}]


def test_compact_row_round_trip_by_hand():
    # A conversation of 4 tokens (labels on 2..3), a 2-predictor block after token 1, an isolated 2-token copy.
    row = {"input_ids": [7, 8, 9, 10, 50, 51, 9, 10], "labels": [-100, -100, 9, 10, -100, -100, -100, -100],
           "position_ids": [0, 1, 2, 3, 2, 3, 0, 1], "block_start": [0, 0, 0, 0, 4, 4, 6, 6],
           "context_end": [0, 0, 0, 0, 2, 2, 0, 0], "conversation_length": 4, "view_a_index": 5, "view_b_index": 7,
           "view_pairs": [(5, 7)], "pair_spans": [(4, 8)], "truncated": False, "num_steps": 2, "example_index": 3}
    stored = compact_row(row)
    assert stored["label_spans"] == [2, 4]
    assert stored["runs"] == [0, 0, 0, 0, 4, 2, 4, 2, 6, 0, 6, 0]
    assert expand_row(stored) == row


def test_bad_line_found_by_a_worker_names_its_line(tiny_model_dirs, tmp_path, tiny_chats, monkeypatch):
    monkeypatch.setattr(dataset_cache, "SHARD_BYTES", 500)
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(row) for row in tiny_chats]
    lines[15] = "{oops"
    path.write_text("\n".join(lines) + "\n")
    tokenizer = load_tokenizer(str(tiny_model_dirs["gpt2"]))
    with pytest.raises(ValueError, match=r"bad.jsonl:16: invalid JSON"):
        packed_rows(path, tokenizer, "gpt2", STEP, cache_dir=tmp_path / "c", num_proc=2)
    assert entries(tmp_path / "c") == set() and not list((tmp_path / "c").iterdir())  # nothing half-built left


def test_start_line_says_whether_the_cache_was_hit(tiny_model_dirs, chat_file, tmp_path, capsys):
    argv = ["--train_file", str(chat_file), "--step_jepa", "--model_name", str(tiny_model_dirs["gpt2"]),
            "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), "--debug", "7"]
    assert run_command("train", argv) == 0
    first = capsys.readouterr().out
    assert "data: 20 rows" in first and "tokenized by 1 process in" in first
    assert f"cache {tmp_path / 'cache'}" in first
    assert "step_2_copy p1" in first  # --debug 7's regions, packed again on demand
    assert run_command("train", argv) == 0
    second = capsys.readouterr().out
    assert "from the cache in" in second and "(hit)" in second and "tokenized" not in second
    # The layout printed from the cache is the one printed when the rows were built.
    assert second[second.index("--- row 0"):] == first[first.index("--- row 0"):]
    assert run_command("train", [*argv, "--no_data_cache"]) == 0
    assert "not cached (--no_data_cache)" in capsys.readouterr().out


def test_a_run_reads_its_training_file_once_for_its_digest(tiny_model_dirs, chat_file, tmp_path, monkeypatch):
    """The run record and the cache key both need the training file's SHA-256: one pass over the file gives both."""
    from stepjepa.training import checkpoints

    hashed = []

    def counting_sha256(path):
        hashed.append(Path(path).resolve())
        return real_sha256(path)

    real_sha256 = checkpoints.file_sha256
    monkeypatch.setattr(checkpoints, "file_sha256", counting_sha256)
    monkeypatch.setattr(dataset_cache, "file_sha256", counting_sha256)
    argv = ["--train_file", str(chat_file), "--step_jepa", "--model_name", str(tiny_model_dirs["gpt2"]),
            "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), "--debug", "7"]
    assert run_command("train", argv) == 0
    assert hashed == [chat_file.resolve()]


def test_group_by_length_reads_the_stored_rows(tiny_model_dirs, chat_file, tmp_path):
    """The Trainer's length-grouped sampler takes each row's length from the dataset it is given."""
    out = tmp_path / "out"
    argv = ["--train_file", str(chat_file), "--step_jepa", "--model_name", str(tiny_model_dirs["gpt2"]),
            "--output_dir", str(out), "--max_steps", "2", "--batch_size", "4", "--logging_steps", "1",
            "--debug", "0", "--group_by_length"]
    assert run_command("train", argv) == 0
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_tensorboard_receives_the_metrics_files_values(tiny_model_dirs, chat_file, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "out"
    argv = ["--train_file", str(chat_file), "--step_jepa", "--predictors", "1", "--model_name",
            str(tiny_model_dirs["llama"]), "--output_dir", str(out), "--max_steps", "3", "--batch_size", "2",
            "--logging_steps", "1", "--debug", "0", "--report_to", "tensorboard", "--eval_file", str(chat_file),
            "--eval_steps", "3"]
    assert run_command("train", argv) == 0
    events = list((out / "runs").rglob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    for name in ("lm_loss", "jepa_loss", "loss", "learning_rate", "tokens_per_s"):
        scalars = accumulator.Scalars(f"train/{name}")
        assert [s.step for s in scalars] == [1, 2, 3]
        assert [s.value for s in scalars] == pytest.approx([row[name] for row in rows], rel=1e-6)
    # The evaluation at step 3 (rows of --eval_file, from the same cache entry: same file, same settings).
    (evaluation,) = [json.loads(line) for line in (out / "eval_metrics.jsonl").read_text().splitlines()]
    assert evaluation["step"] == 3 and evaluation["eval_jepa_loss"] is not None
    for name in ("lm_loss", "jepa_loss", "loss"):
        (scalar,) = accumulator.Scalars(f"eval/{name}")
        assert (scalar.step, scalar.value) == (3, pytest.approx(evaluation[f"eval_{name}"], rel=1e-6))


@pytest.mark.slow
def test_torchrun_two_ranks_tokenize_once(tiny_model_dirs, chat_file, tmp_path):
    """Rank 0 tokenizes and stores the rows; rank 1 waits for it (main_process_first) and reads the cache."""
    import subprocess
    import sys

    from conftest import free_port

    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "stepjepa", "train", "--train_file", str(chat_file), "--step_jepa", "--model_name",
           str(tiny_model_dirs["gpt2"]), "--output_dir", str(tmp_path / "out"), "--cache_dir", str(cache),
           "--max_steps", "1", "--batch_size", "2", "--debug", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0/2: data tokenized here" in done.stdout and "rank 1/2: data from the cache" in done.stdout
    assert len(entries(cache)) == 1 and not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_streamed_rows_are_the_cached_rows_in_a_shuffled_order(tiny_model_dirs, data_file, tmp_path, monkeypatch):
    from itertools import islice

    from stepjepa.data.cache import streamed_rows

    monkeypatch.setattr(dataset_cache, "SHARD_BYTES", 700)  # several shards, read in a shuffled order
    tokenizer = load_tokenizer(str(tiny_model_dirs["llama"]))
    settings = RowSettings("step_jepa", (), None, 512, "all")
    fresh, _ = build_rows(tokenizer, load_chats(data_file), RowSettings("step_jepa", [], None, 512, "all"))
    for row in fresh:
        del row["regions"]
    stream = streamed_rows(data_file, tokenizer, settings, seed=3, buffer_size=5)
    streamed = [expand_row(row) for row in stream]
    assert sorted(streamed, key=lambda row: row["example_index"]) == fresh
    assert [row["example_index"] for row in streamed] != list(range(len(fresh)))
    # The same seed gives the same order; another epoch another one (the Trainer calls set_epoch).
    again = streamed_rows(data_file, tokenizer, settings, seed=3, buffer_size=5)
    assert [row["example_index"] for row in again] == [row["example_index"] for row in streamed]
    again.set_epoch(1)
    assert [row["example_index"] for row in islice(again, 20)] != [row["example_index"] for row in streamed]


def test_streaming_run_trains_without_the_cache(tiny_model_dirs, chat_file, tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["--train_file", str(chat_file), "--step_jepa", "--model_name", str(tiny_model_dirs["gpt2"]),
            "--output_dir", str(out), "--cache_dir", str(cache), "--streaming", "--shuffle_buffer", "8",
            "--max_steps", "12", "--batch_size", "2", "--logging_steps", "1", "--debug", "1"]
    assert run_command("train", argv) == 0
    assert "data: streaming" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # 20 examples in batches of 2: step 11 is the second pass over the stream.
    assert [row["step"] for row in rows] == list(range(1, 13)) and all(row["jepa_loss"] is not None for row in rows)
    assert not cache.exists()
    assert run_command("train", ["--train_file", str(chat_file), "--streaming"]) == 2
    assert "--streaming needs --max_steps" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_streaming_ranks_read_their_own_rows(tiny_model_dirs, chat_file, tmp_path):
    import re
    import subprocess
    import sys

    from conftest import free_port

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "stepjepa", "train", "--train_file", str(chat_file), "--step_jepa", "--model_name",
           str(tiny_model_dirs["gpt2"]), "--output_dir", str(out), "--streaming", "--max_steps", "3",
           "--batch_size", "2", "--logging_steps", "1", "--debug", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    firsts = dict(re.findall(r"rank (\d)/2: first batch \S+ \S+, token-id sum (\d+)", done.stdout))
    assert set(firsts) == {"0", "1"} and firsts["0"] != firsts["1"]  # every other example each
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
