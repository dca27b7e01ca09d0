"""Faults through the command line: another run's summary or record never passes for this run's, a save cut short
is never counted complete, outputs never overwrite their inputs, a full disk and signals end in one line."""

from __future__ import annotations

import errno
import hashlib
import json
import resource
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from stepjepa.cli import run_command

FAST = ["--batch_size", "2", "--logging_steps", "1", "--debug", "1"]


def train_argv(chat_file, model_dir, out: Path, *extra: str) -> list[str]:
    return ["--train_file", str(chat_file), "--model_name", str(model_dir), "--output_dir", str(out), "--regular",
            *FAST, *extra]


def says_one_line(err: str, line: str) -> None:
    """``line`` is a whole line of stderr (beside the progress bars of --debug 1), with no traceback."""
    assert line in err.replace("\r", "\n").splitlines(), err[-2000:]
    assert "Traceback" not in err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` by relative name -> content digest (what "nothing touched" compares)."""
    return {str(p.relative_to(path)): digest(p) for p in sorted(path.rglob("*")) if p.is_file()}


@contextmanager
def file_size_limit(limit: int):
    """``ulimit -f`` for this process: a write past ``limit`` bytes fails with EFBIG (SIGXFSZ ignored), as a full
    disk's fails with ENOSPC."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


# Tiny gpt2 (conftest): model.safetensors 302 kB, its optimizer.pt 623 kB; a LoRA checkpoint's largest file, its
# optimizer.pt, 145 kB. 200 kB lets a LoRA run save its checkpoints and stops its merged model's save.
LORA_ONLY = 200_000


@pytest.mark.slow  # three training runs
def test_another_runs_summary_does_not_finish_a_run_cut_while_saving(tiny_model_dirs, chat_file, tmp_path, capsys):
    """Class 1: run A (full) finished in D; run B (--lora, --overwrite_output_dir) is cut saving its final model;
    resuming B must save B's model, not call A's summary B's finish."""
    out = tmp_path / "out"
    argv = train_argv(chat_file, tiny_model_dirs["gpt2"], out, "--max_steps", "2", "--save_steps", "1")
    assert run_command("train", argv) == 0
    a_model = digest(out / "model.safetensors")
    with file_size_limit(LORA_ONLY), pytest.raises((SystemExit, Exception)) as cut:
        # A run cut anyhow (its one-line message is the full-disk test's concern): an exit status, or a traceback.
        raise SystemExit(run_command("train", [*argv, "--lora", "--overwrite_output_dir"]))
    assert cut.type is not SystemExit or cut.value.code != 0
    capsys.readouterr()

    assert run_command("train", [*argv, "--lora", "--resume_from_checkpoint", "latest"]) == 0
    printed = capsys.readouterr().out
    assert "nothing to train" not in printed and "saving its model" in printed
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["run"]["lora"] is True and summary["config"]["lora"] is True
    assert digest(out / "model.safetensors") != a_model
    assert (out / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow  # two training runs and a resume
def test_a_checkpoint_cut_while_saved_over_a_complete_one_is_not_complete(tiny_model_dirs, chat_file, tmp_path,
                                                                          capsys, monkeypatch):
    """Class 3: run B re-saves run A's checkpoint-2 and is cut writing its optimizer state (a full disk, kill -9):
    A's completion record must not make the mixed folder count as complete."""
    out = tmp_path / "out"
    argv = train_argv(chat_file, tiny_model_dirs["gpt2"], out, "--max_steps", "2", "--save_steps", "1")
    assert run_command("train", argv) == 0
    real_save = torch.save

    def cut_save(obj, f, *args, **kwargs):
        if Path(f).parent.name == "checkpoint-2" and Path(f).name == "optimizer.pt":
            Path(f).write_bytes(b"PK\x03\x04")  # what a cut write leaves
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", cut_save)
    assert run_command("train", [*argv, "--overwrite_output_dir", "--learning_rate", "1e-3"]) == 2
    monkeypatch.setattr(torch, "save", real_save)
    capsys.readouterr()

    assert run_command("train", [*argv, "--learning_rate", "1e-3", "--resume_from_checkpoint", "latest"]) == 0
    captured = capsys.readouterr()
    assert f"note: skipped incomplete {out / 'checkpoint-2'}" in captured.err
    assert "nothing to train" not in captured.out
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == 2


def model_copy(tiny_model_dirs, tmp_path) -> Path:
    path = tmp_path / "model"
    shutil.copytree(tiny_model_dirs["gpt2"], path)
    return path


@pytest.mark.parametrize("case", ["model_is_output_dir", "train_file_in_output_dir", "eval_file_in_output_dir"])
def test_train_refuses_an_output_dir_holding_its_inputs(tiny_model_dirs, chat_file, tmp_path, capsys, case):
    """Class 4: --output_dir D --overwrite_output_dir with the base model D, or the data inside D, is one line
    and exit 2 with D untouched (it would overwrite the base model or delete the training file)."""
    if case == "model_is_output_dir":
        out = model_copy(tiny_model_dirs, tmp_path)
        argv = train_argv(chat_file, out, out, "--lora", "--max_steps", "1")
        flag, inside = "--model_name", out
    else:
        out = tmp_path / "run"
        out.mkdir()
        inside = out / "metrics.jsonl"
        shutil.copy(chat_file, inside)
        data = ["--train_file", str(inside)] if case == "train_file_in_output_dir" else [
            "--train_file", str(chat_file), "--eval_file", str(inside)]
        argv = [*train_argv(chat_file, tiny_model_dirs["gpt2"], out, "--max_steps", "1"), *data]
        flag = data[-2]
    before = tree(out)
    assert run_command("train", [*argv, "--overwrite_output_dir"]) == 2
    err = capsys.readouterr().err
    relation = "is" if inside == out else "holds"
    assert err == (f"stepjepa train: error: --output_dir {out} {relation} {flag} {inside}: the command would "
                   "overwrite its own input; write to another path\n")
    assert tree(out) == before


def test_report_refuses_to_write_over_the_ledger_it_reads(tmp_path, capsys):
    """Class 4: `report DIR --output DIR/ledger.jsonl` is one line and exit 2; the ledger is kept byte for byte
    and no plot is written."""
    pytest.importorskip("scipy")
    pytest.importorskip("matplotlib")
    runs = tmp_path / "runs"
    runs.mkdir()
    entry = {"run": "regular_seed1", "config": "regular", "mode": "regular", "seed": 1, "accuracy": 0.5,
             "strict_accuracy": 0.25, "correct": 50, "total_examples": 100, "train_loss": 1.0, "global_step": 2,
             "fixed": {"model_name": "tiny", "train_file": "t.jsonl", "test_file": "e.jsonl"}}
    ledger = runs / "ledger.jsonl"
    ledger.write_text(json.dumps(entry) + "\n")
    (runs / "regular_seed1").mkdir()
    metrics = runs / "regular_seed1" / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 1, "lm_loss": 1.0, "jepa_loss": None}) + "\n")
    before = tree(runs)
    for output, name in ((ledger, "the ledger"), (metrics, "run regular_seed1's metrics")):
        assert run_command("report", [str(runs), "--output", str(output)]) == 2
        assert capsys.readouterr().err == (f"stepjepa report: error: --output {output} is {name} {output}: the "
                                           "command would overwrite its own input; write to another path\n")
        assert tree(runs) == before


@pytest.mark.parametrize("full_first", [True, False])
def test_resuming_with_another_lora_setting_is_one_line(tiny_model_dirs, chat_file, tmp_path, capsys, full_first):
    """Class 10a: a full fine-tune's checkpoint resumed with --lora (or a LoRA one without) names the difference
    instead of an optimizer ValueError traceback."""
    out = tmp_path / "out"
    argv = train_argv(chat_file, tiny_model_dirs["gpt2"], out, "--save_steps", "1")
    first, then = ([], ["--lora"]) if full_first else (["--lora"], [])
    assert run_command("train", [*argv, "--max_steps", "1", *first]) == 0
    capsys.readouterr()
    before = tree(out)
    assert run_command("train", [*argv, "--max_steps", "2", *then, "--resume_from_checkpoint", "latest"]) == 2
    err = capsys.readouterr().err
    was, now = (False, True) if full_first else (True, False)
    assert err.count("\n") == 1 and f"(lora {was} there, {now} here)" in err, err  # the first: it stops at once
    assert tree(out) == before


@pytest.mark.parametrize("packed_first", [True, False])
def test_resuming_with_another_packing_is_one_line(tiny_model_dirs, chat_file, tmp_path, capsys, packed_first):
    """A --packing run's checkpoint resumed without it (or an unpacked one with it) would continue another data
    order and step size: refused naming the difference, nothing changed."""
    out = tmp_path / "out"
    argv = train_argv(chat_file, tiny_model_dirs["gpt2"], out, "--save_steps", "1")
    packed = ["--packing", "--pack_length", "96"]
    first, then = (packed, []) if packed_first else ([], packed)
    assert run_command("train", [*argv, "--max_steps", "1", *first]) == 0
    capsys.readouterr()
    before = tree(out)
    assert run_command("train", [*argv, "--max_steps", "2", *then, "--resume_from_checkpoint", "latest"]) == 2
    err = capsys.readouterr().err
    was, now = (96, None) if packed_first else (None, 96)
    assert err.count("\n") == 1 and f"(pack_length {was} there, {now} here)" in err, err
    assert tree(out) == before


@pytest.mark.slow  # a training run and a resume, the first under a file size limit
def test_a_full_disk_while_saving_a_checkpoint_is_one_line_keeping_the_last_complete_one(
        tiny_model_dirs, chat_file, tmp_path, capsys):
    """Class 8: a write failing while saving a checkpoint (EFBIG here, ENOSPC on a full disk) is one line naming
    the checkpoint, exit 2; the last complete checkpoint stays and resumes."""
    out = tmp_path / "out"
    argv = train_argv(chat_file, tiny_model_dirs["gpt2"], out, "--save_steps", "1")
    assert run_command("train", [*argv, "--max_steps", "1"]) == 0
    capsys.readouterr()
    with file_size_limit(400_000):  # the weights (302 kB) fit, the optimizer state (623 kB) does not
        assert run_command("train", [*argv, "--max_steps", "2", "--resume_from_checkpoint", "latest"]) == 2
    # torch's writer says no errno ("unexpected pos"): the line says what such a failure is.
    says_one_line(capsys.readouterr().err, f"stepjepa train: error: {out / 'checkpoint-2'}: write failed (a full disk "
                                           "or a file size limit) while saving checkpoint-2; the last complete "
                                           "checkpoint, checkpoint-1, is kept")
    assert run_command("train", [*argv, "--max_steps", "2", "--resume_from_checkpoint", "latest"]) == 0
    assert f"skipped incomplete {out / 'checkpoint-2'}" in capsys.readouterr().err
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == 2


@pytest.mark.slow  # a training run under a file size limit, then its resume
def test_a_full_disk_while_saving_the_final_model_is_one_line_and_resumes(tiny_model_dirs, chat_file, tmp_path,
                                                                          capsys):
    """Class 8: the final model's save failing is one line naming the output directory, exit 2, no summary;
    resuming saves the model from the last checkpoint."""
    out = tmp_path / "out"
    argv = train_argv(chat_file, tiny_model_dirs["gpt2"], out, "--lora", "--max_steps", "2", "--save_steps", "1")
    with file_size_limit(LORA_ONLY):
        assert run_command("train", argv) == 2
    says_one_line(capsys.readouterr().err, f"stepjepa train: error: {out}: File too large while saving the final "
                                           "model; the last complete checkpoint, checkpoint-2, is kept")
    assert not (out / "train_summary.json").exists()
    assert run_command("train", [*argv, "--resume_from_checkpoint", "latest"]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["weights"]["model.safetensors"] == (
        out / "model.safetensors").stat().st_size


def test_sigterm_before_the_first_step_ends_saves_no_checkpoint_0(tiny_model_dirs, chat_file, tmp_path, capsys,
                                                                  monkeypatch):
    """Also seen: SIGTERM in the middle of step 1's gradient accumulation left a `checkpoint-0` of an
    untrained model; now nothing is saved, one line, exit 143."""
    import os

    from stepjepa.training.trainer import JepaTrainer

    real_loss = JepaTrainer.compute_loss
    sent = []

    def loss_then_signal(self, *args, **kwargs):
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, during the first micro-batch
        return real_loss(self, *args, **kwargs)

    monkeypatch.setattr(JepaTrainer, "compute_loss", loss_then_signal)
    out = tmp_path / "out"
    argv = train_argv(chat_file, tiny_model_dirs["gpt2"], out, "--max_steps", "3", "--grad_accum", "4")
    assert run_command("train", argv) == 128 + signal.SIGTERM
    says_one_line(capsys.readouterr().err, "interrupted by SIGTERM before the first step ended: nothing to save")
    assert not list(out.glob("checkpoint-*"))


SECOND_SIGNAL = """
import os, signal, sys
import transformers
from stepjepa.cli import main
from stepjepa.training.trainer import JepaTrainer

real_loss, real_save, calls = JepaTrainer.compute_loss, transformers.Trainer._save_checkpoint, []

def loss(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGTERM)  # the first signal, during step 2
    return real_loss(self, *args, **kwargs)

def save(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # the second, as the interrupt's checkpoint save begins
    return real_save(self, *args, **kwargs)

JepaTrainer.compute_loss, transformers.Trainer._save_checkpoint = loss, save
sys.exit(main(["train", *sys.argv[1:]]))
"""


@pytest.mark.slow  # a training process
def test_a_second_sigterm_during_the_interrupts_save_is_one_line(tiny_model_dirs, chat_file, tmp_path):
    """Also seen: a second SIGTERM while the first one's checkpoint is saved killed the run with no line; now one
    line, exit 143, and the cut checkpoint is not complete."""
    from stepjepa.training.rundir import RunDir

    out = tmp_path / "out"
    argv = train_argv(chat_file, tiny_model_dirs["gpt2"], out, "--max_steps", "5", "--save_steps", "1000")
    done = subprocess.run([sys.executable, "-c", SECOND_SIGNAL, *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-2000:]
    says_one_line(done.stderr, "interrupted again by SIGTERM: stopped at once; no checkpoint to resume")
    assert RunDir(out).newest_complete()[0] is None


def test_evaluate_and_probe_refuse_outputs_over_their_inputs(tiny_model_dirs, chat_file, tmp_path, capsys):
    """Class 4 for the scoring commands: `evaluate --output_file` equal to the test file, and `probe --output_file`
    whose plot (`.png` beside it) is the test file, are one line and exit 2; the test file is kept byte for byte."""
    model = str(tiny_model_dirs["llama"])
    data = tmp_path / "chats.jsonl"
    shutil.copy(chat_file, data)
    before = data.read_bytes()
    assert run_command("evaluate", ["--model_path", model, "--test_file", str(data), "--output_file", str(data)]) == 2
    assert capsys.readouterr().err == (f"stepjepa evaluate: error: --output_file {data} is --test_file {data}: the "
                                       "command would overwrite its own input; write to another path\n")
    plot_named = tmp_path / "chats.png"
    shutil.copy(chat_file, plot_named)
    assert run_command("probe", ["--model_path", model, "--test_file", str(plot_named),
                                 "--output_file", str(tmp_path / "chats.json")]) == 2
    assert capsys.readouterr().err == (f"stepjepa probe: error: its plot {plot_named} is --test_file {plot_named}: "
                                       "the command would overwrite its own input; write to another path\n")
    assert data.read_bytes() == before and plot_named.read_bytes() == before
    assert not (tmp_path / "chats.json").exists()
