"""Benchmark of the training data path (issue 12's targets): memory per token, parallel tokenizing, cache hits.

    python scripts/bench_data.py --examples 100000 --workdir /tmp/bench_data

Writes (once) ``--examples`` synthetic chats with `stepjepa prepare --synthetic`, then measures, each in a fresh
process that has loaded the embedded model and tokenizer first:

- cold start, 1 tokenizing process (empty cache): seconds until the rows are ready;
- cold start, ``--processes`` processes (another empty cache): seconds; the speed-up against 1;
- warm start (the first cache again): seconds (a cache hit); the speed-up against the cold start;
- resident memory after the rows are ready, above the model's own footprint, per token: VmRSS, and its
  anonymous (private) and file-backed (memory-mapped Arrow, reclaimable) parts; also after every page of the
  rows has been read once (what a whole epoch touches);
- with ``--legacy``: the same for the rows built as Python lists (``build_rows``), the path before the cache.

Prints one JSON line per measurement and a summary table; the numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def memory() -> dict[str, int]:
    """This process's resident memory in bytes: VmRSS, RssAnon, RssFile (from /proc/self/status)."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def child(args: argparse.Namespace) -> None:
    """One measured start: model and tokenizer, then the rows (cached or as lists); prints one JSON line."""
    from stepjepa.data.cache import RowSettings, packed_rows
    from stepjepa.models import add_predictor_tokens, load_model, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    ids = add_predictor_tokens(tokenizer, args.predictors) if args.predictors else []
    model = load_model(args.model)
    model.resize_token_embeddings(len(tokenizer))
    loaded = memory()
    # The libraries' own code (pyarrow, datasets) is a fixed cost, not a per-token one: counted apart.
    import datasets  # noqa: F401
    import pyarrow.compute  # noqa: F401

    before = memory()
    started = time.perf_counter()
    if args.child == "legacy":
        from stepjepa.data import load_chats
        from stepjepa.core.examples import build_rows

        rows, _ = build_rows(tokenizer, load_chats(args.data), RowSettings(args.mode, ids, None, args.max_length, "first"))
        tokens, seconds, hit = sum(len(row["input_ids"]) for row in rows), time.perf_counter() - started, False
        ready, touched = memory(), None
    else:
        settings = RowSettings(args.mode, tuple(ids), None, args.max_length, "first")
        packed = packed_rows(args.data, tokenizer, args.model, settings, cache_dir=args.cache_dir,
                             num_proc=args.num_proc)
        tokens, seconds, hit = packed.tokens, time.perf_counter() - started, packed.cache_hit
        ready = memory()
        # Read every stored page once, as an epoch does (file-backed pages: shared, reclaimable).
        import pyarrow.compute as pc

        table = packed.dataset.data
        for name in table.column_names:
            column = table.column(name)
            while hasattr(column.type, "value_type"):
                column = pc.list_flatten(column)
            pc.count(column)
            if column.type.bit_width > 1:
                pc.sum(column)
        touched = memory()
    above = {key: (ready[key] - before[key]) / tokens for key in ready}
    record = {"start": args.child, "num_proc": args.num_proc, "cache_hit": hit, "seconds": round(seconds, 2),
              "tokens": tokens, "tokens_per_s": round(tokens / seconds), "model_rss_mb": round(loaded["VmRSS"] / 2**20),
              "datasets_import_mb": round((before["VmRSS"] - loaded["VmRSS"]) / 2**20, 1),
              "bytes_per_token_ready": {k: round(v, 2) for k, v in above.items()}}
    if touched:
        record["bytes_per_token_all_pages_read"] = {k: round((touched[k] - before[k]) / tokens, 2) for k in touched}
    del model
    print(json.dumps(record), flush=True)


def measure(args: argparse.Namespace, kind: str, cache_dir: Path | None, num_proc: int) -> dict:
    argv = [sys.executable, str(HERE), "--child", kind, "--data", str(args.data), "--model", args.model,
            "--mode", args.mode, "--predictors", str(args.predictors), "--max_length", str(args.max_length),
            "--num_proc", str(num_proc)]
    if cache_dir:
        argv += ["--cache_dir", str(cache_dir)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"bench_data: the {kind} start failed:\n{done.stderr[-3000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(record), flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100_000, help="synthetic chats (stepjepa prepare --synthetic)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_data"), help="data and caches go here")
    parser.add_argument("--processes", type=int, default=2, help="tokenizing processes compared with 1")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--mode", default="step_jepa", choices=("regular", "llm_jepa", "step_jepa"))
    parser.add_argument("--predictors", type=int, default=0)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--legacy", action="store_true", help="also measure the rows as Python lists")
    parser.add_argument("--child", choices=("rows", "legacy"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache_dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--num_proc", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    args.workdir.mkdir(parents=True, exist_ok=True)
    args.data = args.workdir / f"synthetic_{args.examples}.jsonl"
    if not args.data.is_file():
        subprocess.run([sys.executable, "-m", "stepjepa", "prepare", "--synthetic", str(args.examples),
                        "--output", str(args.data)], check=True, stdout=subprocess.DEVNULL)
    caches = {n: args.workdir / f"cache_{n}proc" for n in (1, args.processes)}
    for cache in caches.values():
        shutil.rmtree(cache, ignore_errors=True)
    print(f"bench_data: {args.examples} chats ({args.data.stat().st_size / 2**20:.1f} MiB), {args.mode}, "
          f"max_length {args.max_length}; {len(os.sched_getaffinity(0))} cores, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    cold = measure(args, "rows", caches[1], 1)
    warm = measure(args, "rows", caches[1], 1)
    parallel = measure(args, "rows", caches[args.processes], args.processes)
    legacy = measure(args, "legacy", None, 1) if args.legacy else None
    print(f"\ntokens: {cold['tokens']}; importing datasets and pyarrow: {cold['datasets_import_mb']} MiB once "
          "(not counted per token)")
    print(f"cold start, 1 process:   {cold['seconds']:8.1f} s ({cold['tokens_per_s']} tokens/s)")
    print(f"cold start, {args.processes} processes: {parallel['seconds']:8.1f} s; speed-up "
          f"{cold['seconds'] / parallel['seconds']:.2f}x (target >= 1.7x with 2 idle cores)")
    print(f"warm start (cache hit):  {warm['seconds']:8.1f} s; {cold['seconds'] / warm['seconds']:.0f}x faster than "
          f"cold (target >= 10x)")
    for name, record in (("cold", cold), ("warm", warm), ("legacy lists", legacy)):
        if record:
            ready = record["bytes_per_token_ready"]
            line = (f"bytes/token above the model, {name}: VmRSS {ready['VmRSS']:.1f} (anonymous {ready['RssAnon']:.1f}, "
                    f"file-backed {ready['RssFile']:.1f})")
            if "bytes_per_token_all_pages_read" in record:
                read = record["bytes_per_token_all_pages_read"]
                line += f"; every page read: VmRSS {read['VmRSS']:.1f} (anonymous {read['RssAnon']:.1f})"
            print(line + " (target <= 12)")
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
