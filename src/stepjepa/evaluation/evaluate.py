"""Evaluation: batched generation, per-task scoring (see stepjepa.evaluation.tasks), resumable per-problem results."""

from __future__ import annotations

import gc
import json
import re
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from stepjepa.core.errors import UsageError
from stepjepa.data.files import check_outputs_apart
from stepjepa.data import append_jsonl, read_jsonl, write_json_atomic
from stepjepa.evaluation.config import EvaluateConfig
from stepjepa.evaluation.generation import END_OF_TURN, MAX_NEW_TOKENS, iter_generations, render_prompts
from stepjepa.evaluation.problems import Problem, load_problems
from stepjepa.evaluation.tasks import SCORE_NAMES, detect_task, score_reply
from stepjepa.machine import provenance
from stepjepa.models import load_model, load_tokenizer
from stepjepa.precision import inference_dtype, resolve_device


def _load(model_path: str, device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """Model (eval mode, on ``device``, weights in ``dtype``) and tokenizer."""
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, dtype=dtype).to(device).eval()
    return model, tokenizer


def summary_path(output_file: str | Path) -> Path:
    """``results.jsonl`` -> ``results_summary.json`` beside it."""
    output_file = Path(output_file)
    return output_file.with_name(f"{output_file.stem}_summary.json")


def output_for(output_file: str, model_path: str, several: bool) -> Path:
    """The results file of one model: ``output_file`` itself, or ``<stem>_<model><suffix>`` when comparing."""
    path = Path(output_file)
    if not several:
        return path
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_path).strip("._") or "model"
    return path.with_name(f"{path.stem}_{slug}{path.suffix}")


# The flag of each generation setting a result row records (what else changes a reply is checked on its own:
# the model, the task, the problem's question).
SETTING_FLAGS = {"max_new_tokens": "--max_new_tokens", "temperature": "--temperature", "seed": "--seed",
                 "use_test_prompts": "--use_test_prompts", "precision": "precision (--bf16/--no_bf16)"}


def generation_settings(cfg: EvaluateConfig, dtype: torch.dtype) -> dict[str, Any]:
    """What besides the model, task and problem changes a reply; recorded in every result row, so that a resume
    under other settings is refused instead of mixing replies (the seed only matters when sampling)."""
    return {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
            "seed": cfg.seed if cfg.temperature > 0 else None, "use_test_prompts": cfg.use_test_prompts,
            "precision": str(dtype).removeprefix("torch.")}


def _result_rows(path: Path) -> list[tuple[int, dict]]:
    """``(line, row)`` of every row of an existing results file; refuses a file that is not one."""
    if not path.is_file() or not path.read_bytes().strip():
        return []
    rows = read_jsonl(path)
    for line, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("index"), int):
            raise UsageError(f"{path}:{line}: not a result row of stepjepa evaluate; pass another --output_file")
    return rows


def _settings_differ(path: Path, line: int, recorded: Any, settings: dict[str, Any]) -> str | None:
    """The refusal naming the first setting in which a row's ``recorded`` settings differ, or None."""
    hint = "pass --restart to evaluate again from the start (its rows are discarded) or another --output_file"
    if not isinstance(recorded, dict):
        return f"{path}:{line}: holds results whose generation settings are not recorded; {hint}"
    for name, value in settings.items():
        if recorded.get(name) != value:
            return (f"{path}:{line}: holds results generated with {SETTING_FLAGS[name]} "
                    f"{_shown(name, recorded.get(name))}, not {_shown(name, value)}; {hint}")
    return None


def _shown(name: str, value: Any) -> Any:
    return "none (greedy)" if name == "seed" and value is None else value


def _finished(path: Path, problems: list[Problem], model_path: str, task: str,
              settings: dict[str, Any]) -> dict[int, dict]:
    """Rows already in ``path`` for these problems; refuses a file of another model, task, test file or
    generation settings."""
    done: dict[int, dict] = {}
    for line, row in _result_rows(path):
        if row.get("model_path") != model_path:
            raise UsageError(
                f"{path}: holds results of model '{row.get('model_path')}', not '{model_path}'; "
                "pass another --output_file"
            )
        if row.get("task", "gsm8k") != task:
            raise UsageError(
                f"{path}: holds results of task {row.get('task', 'gsm8k')}, not {task}; pass another --output_file"
            )
        index = row["index"]
        if index < len(problems) and row.get("question") != problems[index].question:
            raise UsageError(
                f"{path}:{line}: problem {index} differs from the test file's; pass another --output_file"
            )
        differ = _settings_differ(path, line, row.get("generation"), settings)
        if differ:
            raise UsageError(differ)
        if index < len(problems):
            done.setdefault(index, row)
    return done


def _score(rows: list[dict]) -> dict[str, float | int]:
    correct = sum(bool(r["correct"]) for r in rows)
    strict = sum(bool(r["strict_correct"]) for r in rows)
    total = len(rows)
    return {
        "total_examples": total,
        "correct": correct,
        "strict_correct": strict,
        "accuracy": correct / total if total else 0.0,
        "strict_accuracy": strict / total if total else 0.0,
        "flexible_accuracy": correct / total if total else 0.0,
        **termination_stats(rows),
    }


def termination_stats(rows: list[dict]) -> dict[str, float | int | None]:
    """How the generations ended, over the rows that record it (rows of older versions do not: not counted):
    how many ended at a stop token (end of turn or EOS) and how many were cut at --max_new_tokens, with their
    shares; the mean and median reply length in tokens (before the stop token); accuracy among those that ended.
    Values that need a row are None without one."""
    known = [r for r in rows if r.get("finish") in (END_OF_TURN, MAX_NEW_TOKENS)]
    ended = [r for r in known if r["finish"] == END_OF_TURN]
    lengths = [r["generated_tokens"] for r in known]
    return {
        "termination_rows": len(known),
        "ended_at_end_of_turn": len(ended),
        "hit_max_new_tokens": len(known) - len(ended),
        "end_of_turn_share": len(ended) / len(known) if known else None,
        "max_new_tokens_share": (len(known) - len(ended)) / len(known) if known else None,
        "mean_generated_tokens": statistics.fmean(lengths) if lengths else None,
        "median_generated_tokens": statistics.median(lengths) if lengths else None,
        "accuracy_when_ended": sum(bool(r["correct"]) for r in ended) / len(ended) if ended else None,
    }


def evaluate_model(
    model_path: str, problems: list[Problem], output_file: Path, cfg: EvaluateConfig, task: str = "gsm8k"
) -> dict:
    """Generate and score the problems not yet in ``output_file`` (all of them with --restart); append their rows;
    write and return the summary."""
    device = resolve_device(cfg.device)
    dtype = inference_dtype(device, cfg.bf16, cfg.no_bf16)
    settings = generation_settings(cfg, dtype)
    summary_file = summary_path(output_file)
    if cfg.restart:
        _result_rows(output_file)  # --restart discards results of stepjepa evaluate, never another file
        done: dict[int, dict] = {}
    else:
        done = _finished(output_file, problems, model_path, task, settings)
    todo = [p for p in problems if p.index not in done]
    rows = list(done.values())
    elapsed = 0.0
    if todo:
        model, tokenizer = _load(model_path, device, dtype)
        if cfg.restart:  # only once the model loaded: a wrong --model_path costs no results
            output_file.unlink(missing_ok=True)
            summary_file.unlink(missing_ok=True)
        torch.manual_seed(cfg.seed)
        output_file.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        prompts = render_prompts(tokenizer, [p.messages for p in todo])
        batches = iter_generations(model, tokenizer, prompts, cfg.batch_size, cfg.max_new_tokens, cfg.temperature)
        with tqdm(total=len(problems), initial=len(done), desc=model_path, unit="problem",
                  disable=cfg.debug == 0) as bar:
            for results in batches:
                for generation in results:
                    problem = todo[generation.position]
                    row = {
                        "index": problem.index,
                        "question": problem.question,
                        "ground_truth": problem.ground_truth,
                        "generated_response": generation.text,
                        "generated_tokens": generation.tokens,
                        "finish": generation.finish,
                        "gt_answer": problem.gt_answer,
                        **score_reply(task, generation.text, problem.gt_answer),
                        "task": task,
                        "model_path": model_path,
                        "generation": settings,
                    }
                    rows.append(row)
                    row["accuracy_so_far"] = sum(r["correct"] for r in rows) / len(rows)
                    append_jsonl(output_file, row)
                bar.update(len(results))
                score = _score(rows)
                bar.set_postfix(acc=f"{score['accuracy']:.3f}", strict=f"{score['strict_accuracy']:.3f}")
        elapsed = time.perf_counter() - started
        del model
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    examples_per_s = len(todo) / elapsed if todo and elapsed > 0 else None
    if examples_per_s is None:
        # Nothing was generated this time: keep the speed measured by the run that did the work.
        examples_per_s = _previous_speed(summary_file)
    summary = {
        "model_path": model_path,
        "test_file": cfg.test_file,
        "task": task,
        **_score(rows),
        "max_new_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "precision": str(dtype).removeprefix("torch."),
        "examples_per_s": examples_per_s,
        "generated_this_run": len(todo),
        "output_file": str(output_file),
        "provenance": provenance(device, str(dtype).removeprefix("torch.")),
    }
    write_json_atomic(summary_file, summary)
    return summary


def _previous_speed(summary_file: Path) -> float | None:
    """``examples_per_s`` of an existing summary, or None when there is none or it is unreadable."""
    try:
        value = json.loads(summary_file.read_text(encoding="utf-8")).get("examples_per_s")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, (int, float)) else None


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def termination_line(summary: dict) -> str:
    """One line: how many replies ended at end of turn, how many hit the cap, their length, accuracy when ended."""
    if not summary.get("termination_rows"):
        return "termination: not recorded (rows of an older version)"
    return (f"termination: {summary['ended_at_end_of_turn']}/{summary['termination_rows']} ended at end of turn "
            f"({_share(summary['end_of_turn_share'])}), {summary['hit_max_new_tokens']} hit --max_new_tokens "
            f"{summary['max_new_tokens']} ({_share(summary['max_new_tokens_share'])}); reply length mean "
            f"{summary['mean_generated_tokens']:.1f}, median {summary['median_generated_tokens']:g} tokens; "
            f"accuracy when ended {_share(summary['accuracy_when_ended'])}")


def format_table(summaries: list[dict]) -> str:
    """A plain-text table: one row per model with its examples, the task's two scores, how the replies ended
    (share at end of turn, share cut at --max_new_tokens, mean length, accuracy when ended) and speed."""
    flexible, strict = SCORE_NAMES[summaries[0].get("task", "gsm8k")]
    header = ("model", "examples", flexible, strict, "ended", "capped", "mean tokens", "acc ended", "examples/s")
    lines = [
        (
            s["model_path"],
            str(s["total_examples"]),
            f"{100 * s['accuracy']:.1f}%",
            f"{100 * s['strict_accuracy']:.1f}%",
            _share(s.get("end_of_turn_share")),
            _share(s.get("max_new_tokens_share")),
            "-" if s.get("mean_generated_tokens") is None else f"{s['mean_generated_tokens']:.1f}",
            _share(s.get("accuracy_when_ended")),
            "-" if s["examples_per_s"] is None else f"{s['examples_per_s']:.2f}",
        )
        for s in summaries
    ]
    widths = [max(len(row[k]) for row in [header, *lines]) for k in range(len(header))]

    def render(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([render(header), render(tuple("-" * w for w in widths)), *map(render, lines)])


def run_evaluate(cfg: EvaluateConfig) -> int:
    """Evaluate every model; Ctrl-C or SIGTERM ends with one line and a resume hint (status 130 / 143)."""
    models = cfg.model_paths()
    for model_path in models:
        output_file = output_for(cfg.output_file, model_path, several=len(models) > 1)
        for path, flag in ((output_file, "--output_file"), (summary_path(output_file), "its summary")):
            if path.is_dir():
                raise UsageError(f"{flag} {path} is a directory; name a file")
        check_outputs_apart({"--output_file": output_file, "its summary": summary_path(output_file)},
                            {"--test_file": cfg.test_file, **{f"model {path}": path for path in models}})

    def stop(signum, frame):
        raise KeyboardInterrupt(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return _evaluate_models(cfg)
    except KeyboardInterrupt as exc:
        signum = exc.args[0] if exc.args else signal.SIGINT
        print(f"stepjepa evaluate: interrupted by {signal.Signals(signum).name}; the problems finished so far are "
              f"kept in {cfg.output_file}; run the same command again to resume", file=sys.stderr)
        return 128 + signum
    finally:
        signal.signal(signal.SIGTERM, previous)


def _evaluate_models(cfg: EvaluateConfig) -> int:
    """Evaluate every requested model on the test file's problems; print the results; exit status 0."""
    task = cfg.task or detect_task(read_jsonl(cfg.test_file)[0][1])
    problems = load_problems(cfg.test_file, cfg.use_test_prompts, task)[: cfg.max_examples]
    flexible, strict = SCORE_NAMES[task]
    models = cfg.model_paths()
    summaries = []
    for model_path in models:
        output_file = output_for(cfg.output_file, model_path, several=len(models) > 1)
        summary = evaluate_model(model_path, problems, output_file, cfg, task)
        summaries.append(summary)
        print(
            f"{model_path}: task {task}{'' if cfg.task else ' (chosen from the first row)'}: "
            f"{flexible} {100 * summary['accuracy']:.1f}% "
            f"({strict} {100 * summary['strict_accuracy']:.1f}%) on {summary['total_examples']} problems; "
            f"results in {output_file}, summary in {summary_path(output_file)}"
        )
        print(f"{model_path}: {termination_line(summary)}")
    if len(models) > 1:
        print(format_table(summaries))
    return 0
