"""Packed training rows stored with `datasets` (Arrow): tokenized in parallel, cached on disk, memory-mapped.

A chat JSONL file becomes packed rows (:func:`stepjepa.core.examples.pack_chat`) once per (file content, tokenizer,
chat template, row settings, packing code); later runs, and every rank of a distributed run, memory-map the
cached Arrow files instead of tokenizing again. Rows are stored compactly: the token ids, the spans whose labels
are the tokens themselves, and runs of (position, block start, context end) that a packed row is made of, about
4.5 bytes per token; an :class:`ExpandingCollator` expands them back into the exact rows the collator reads as
each batch is made (the debug-only ``regions`` are not stored, see :func:`with_regions`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from stepjepa.core.errors import UsageError
from stepjepa.core.examples import RowSettings, row_counts
from stepjepa.core.layout import EXAMPLE_COLUMNS, NO_VIEW, PAIR_LIST_COLUMNS
from stepjepa.core.tokenization import IGNORE_INDEX
from stepjepa.data import chat_problem
from stepjepa.data.files import file_sha256
from stepjepa.machine import available_cores

# Bump when the stored columns change meaning; the packing code's own source is hashed into the key too.
FORMAT = 1
# Paths under the stepjepa package of the code that shapes rows: a change to any of them invalidates the cache.
PACKING_MODULES = ("core/tokenization.py", "core/steps.py", "core/layout.py", "core/view_rows.py", "core/examples.py",
                   "data/cache.py")
SHARD_BYTES = 1 << 20  # one tokenizing task reads about this much of the file
MANIFEST = "manifest.json"


@dataclass
class PackedRows:
    """The rows of one data file: ``dataset`` holds them as stored (:func:`compact_row`; the Trainer reads it
    with an :class:`ExpandingCollator`), :meth:`row` as the collator reads them; ``counts`` as ``build_rows``."""

    dataset: Any  # datasets.Dataset, memory-mapped
    counts: Counter
    tokens: int  # all tokens of all rows (conversations and view blocks)
    cache_hit: bool
    location: Path | None  # the cache entry (None: --no_data_cache)
    processes: int  # tokenizing processes (0 on a cache hit)
    seconds: float

    def row(self, index: int) -> dict[str, Any]:
        return expand_row(self.dataset[index])

    def describe(self) -> str:
        """The start line's data part: hit or built, where, how long."""
        if self.cache_hit:
            return (f"data: {len(self.dataset)} rows, {self.tokens} tokens from the cache in {self.seconds:.2f}s "
                    f"(hit): {self.location}")
        where = f"cache {self.location}" if self.location else "not cached (--no_data_cache)"
        return (f"data: {len(self.dataset)} rows, {self.tokens} tokens tokenized by {self.processes} "
                f"process{'es' if self.processes > 1 else ''} in {self.seconds:.1f}s; {where}")


def default_cache_dir() -> Path:
    """``$STEPJEPA_DATA_CACHE``, else ``data/`` beside the embedded model's cache (``models.cache_dir()``)."""
    from stepjepa.models import cache_dir

    return Path(os.environ.get("STEPJEPA_DATA_CACHE") or cache_dir() / "data")



def tokenizer_digest(tokenizer) -> str:
    """What of the tokenizer shapes rows: its full definition (vocabulary, merges, normalizer, added tokens,
    the predictor tokens among them), the chat template and the special ids end-of-turn detection uses."""
    digest = hashlib.sha256()
    for part in (type(tokenizer).__name__, tokenizer.backend_tokenizer.to_str(), str(tokenizer.chat_template),
                 json.dumps(sorted(tokenizer.all_special_ids)), str(tokenizer.eos_token_id)):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def _packing_code_digest() -> str:
    import tokenizers
    import transformers

    digest = hashlib.sha256(f"{FORMAT} {transformers.__version__} {tokenizers.__version__}".encode())
    here = Path(__file__).parent.parent
    for name in PACKING_MODULES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def cache_key_parts(path: Path, tokenizer, model_name: str, settings: RowSettings,
                    data_sha256: str | None = None) -> dict[str, Any]:
    """The parts the cache key hashes (kept readable in the entry's manifest); ``data_sha256``: the file's digest
    when the caller has it already (train hashes its file once for the run record)."""
    return {"data_sha256": data_sha256 or file_sha256(path), "tokenizer": model_name, "tokenizer_sha256": tokenizer_digest(tokenizer),
            "code_sha256": _packing_code_digest(), **asdict(settings)}


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


# --- compact rows --------------------------------------------------------------------------------------------------


def compact_row(row: dict[str, Any]) -> dict[str, Any]:
    """A packed row as stored: token ids, label spans ``[s0, e0, s1, e1, ...]`` (labels equal to the tokens,
    -100 elsewhere) and runs ``[column, position, block_start, context_end, ...]`` (positions step by one,
    block start and context end constant within a run). Lossless: :func:`expand_row` gives the row back."""
    ids = np.asarray(row["input_ids"], dtype=np.int64)
    labels = np.asarray(row["labels"], dtype=np.int64)
    labelled = labels != IGNORE_INDEX
    if np.any(labels[labelled] != ids[labelled]):
        raise UsageError("a label differs from its token; the compact row format cannot hold it")
    edges = np.diff(np.concatenate(([0], labelled.astype(np.int8), [0])))
    spans = np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)
    table = np.asarray([row["position_ids"], row["block_start"], row["context_end"]], dtype=np.int64)
    breaks = (np.diff(table[0]) != 1) | (np.diff(table[1]) != 0) | (np.diff(table[2]) != 0)
    starts = np.concatenate(([0], np.flatnonzero(breaks) + 1)) if len(ids) else np.zeros(0, dtype=np.int64)
    runs = np.concatenate([starts[:, None], table[:, starts].T], axis=1)
    return {
        "input_ids": row["input_ids"],
        "label_spans": spans.ravel().tolist(),
        "runs": runs.ravel().tolist(),
        **{key: row[key] for key in EXAMPLE_COLUMNS},
        **{key: [value for pair in row[key] for value in pair] for key in PAIR_LIST_COLUMNS},
    }


def _pairs(flat: list[int]) -> list[tuple[int, int]]:
    return list(zip(flat[::2], flat[1::2]))


def expand_row(stored: dict[str, Any]) -> dict[str, Any]:
    """The row :func:`compact_row` stored, as the collator reads it (lists of ints, pairs as tuples)."""
    ids = list(stored["input_ids"])
    length = len(ids)
    labels = [IGNORE_INDEX] * length
    for start, end in _pairs(stored["label_spans"]):
        labels[start:end] = ids[start:end]
    positions, block_start, context_end = [], [], []
    runs = stored["runs"]
    for r in range(0, len(runs), 4):
        column, position, start, end = runs[r : r + 4]
        size = (runs[r + 4] if r + 4 < len(runs) else length) - column
        positions.extend(range(position, position + size))
        block_start.extend([start] * size)
        context_end.extend([end] * size)
    return {
        "input_ids": ids, "labels": labels, "position_ids": positions, "block_start": block_start,
        "context_end": context_end, **{key: stored[key] for key in EXAMPLE_COLUMNS},
        **{key: _pairs(stored[key]) for key in PAIR_LIST_COLUMNS},
    }


@dataclass
class ExpandingCollator:
    """A collator of packed rows (``PackedCollator``) fed the stored rows the Trainer reads from the dataset."""

    collator: Callable[[list[dict[str, Any]]], dict]

    def __call__(self, stored: list[dict[str, Any]]) -> dict:
        return self.collator([expand_row(row) for row in stored])


def features():
    from datasets import Features, List, Value

    ints = List(Value("int32"))
    return Features({
        "input_ids": ints, "label_spans": ints, "runs": ints,
        **{key: Value(kind) for key, kind in EXAMPLE_COLUMNS.items()}, **{key: ints for key in PAIR_LIST_COLUMNS},
    })


# --- reading the file in shards ------------------------------------------------------------------------------------


def _is_blank(raw: bytes) -> bool:
    """A line that ``data.jsonl`` skips as blank (whitespace only once decoded; not UTF-8 is not blank)."""
    if not raw.strip():
        return True
    try:
        return not raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        return False


def plan_shards(path: Path, shard_bytes: int, digest: Any = None) -> tuple[list[dict[str, Any]], int]:
    """Byte ranges of about ``shard_bytes`` ending at line ends, each with its first line number and example
    index; and the number of examples (non-blank lines). One streaming pass: any file size. ``digest``: a hashlib
    object fed every byte read; each shard then also carries ``xxh3`` (its bytes' checksum), which the process
    that tokenizes it checks, so the rows are made of the very bytes hashed."""
    import xxhash

    shards, start, first_line, first_example = [], 0, 1, 0
    offset, line, examples = 0, 0, 0
    shard_digest = xxhash.xxh3_128()

    def shard(end: int) -> dict[str, Any]:
        planned = {"start": start, "end": end, "first_line": first_line, "first_example": first_example}
        if digest is not None:
            planned["xxh3"] = shard_digest.hexdigest()
            shard_digest.reset()
        return planned

    with open(path, "rb") as handle:
        for raw in handle:
            if digest is not None:
                digest.update(raw)
                shard_digest.update(raw)
            offset += len(raw)
            line += 1
            examples += not _is_blank(raw)
            if offset - start >= shard_bytes:
                shards.append(shard(offset))
                start, first_line, first_example = offset, line + 1, examples
    if offset > start:
        shards.append(shard(offset))
    return shards, examples


def changed_while_read(path: Path) -> UsageError:
    return UsageError(f"{path} changed while it was read (its bytes differ from those hashed for the cache key); "
                      "nothing was cached; run again once the file is no longer being written")


def iter_chats(path: Path, start: int = 0, end: int | None = None, first_line: int = 1,
               first_example: int = 0, xxh3: str | None = None) -> Iterator[tuple[int, list[dict]]]:
    """``(example_index, messages)`` of each non-blank line in ``[start, end)`` bytes; a bad line raises
    ValueError naming the file and line, in ``load_chats``' words; so do bytes whose checksum is not ``xxh3``
    (the file changed since it was planned)."""
    from stepjepa.data.jsonl import split_lines

    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read() if end is None else handle.read(end - start)
    if xxh3 is not None:
        import xxhash

        if xxhash.xxh3_128_hexdigest(data) != xxh3:
            raise changed_while_read(path)
    for example, (number, value, error, detail) in enumerate(split_lines(data, first_line), start=first_example):
        problem = detail if error else chat_problem(value)
        if problem:
            raise UsageError(f"{path}:{number}: {problem}")
        yield example, [{"role": m["role"], "content": m["content"]} for m in value["messages"]]


def _shard_rows(path: Path, shard: dict[str, int], tokenizer, settings: RowSettings) -> Iterator[dict[str, Any]]:
    """The compact rows of one shard of the file (rows without any label are dropped, as ``build_rows`` does)."""
    from stepjepa.core.examples import pack_chat

    for index, messages in iter_chats(path, shard["start"], shard["end"], shard["first_line"],
                                      shard["first_example"], shard.get("xxh3")):
        row = pack_chat(tokenizer, messages, settings)
        if any(label != IGNORE_INDEX for label in row["labels"]):
            row["example_index"] = index
            yield compact_row(row)


def _pack_shards(shards: dict[str, list[int]], path: str, tokenizer, settings: RowSettings) -> dict[str, list]:
    """``datasets.map`` function: the compact rows of a batch of shards, as columns."""
    out: dict[str, list] = {name: [] for name in features()}
    for values in zip(*shards.values()):
        for row in _shard_rows(Path(path), dict(zip(shards, values)), tokenizer, settings):
            for key, value in row.items():
                out[key].append(value)
    return out


def _stream_shards(shards: list[dict[str, int]], path: str, tokenizer, settings: RowSettings) -> Iterator[dict]:
    for shard in shards:
        yield from _shard_rows(Path(path), shard, tokenizer, settings)


def streamed_rows(path: str | os.PathLike, tokenizer, settings: RowSettings, seed: int, buffer_size: int):
    """The packed rows of a chat JSONL file of any size as a ``datasets.IterableDataset``, tokenized as they are
    read: shards (MiB slices of the file) in a shuffled order, rows shuffled within ``buffer_size`` of them
    (reshuffled each epoch by the Trainer's ``set_epoch``). Nothing is cached and memory holds the buffer only."""
    from datasets import IterableDataset

    path = Path(path)
    shards, examples = plan_shards(path, SHARD_BYTES)
    if not examples:
        raise UsageError(f"{path}: file is empty")
    stream = IterableDataset.from_generator(_stream_shards, features=features(), gen_kwargs={
        "shards": shards, "path": str(path), "tokenizer": tokenizer, "settings": settings})
    return stream.shuffle(seed=seed, buffer_size=buffer_size)


def count_rows(dataset, examples: int, mode: str) -> Counter:
    """``build_rows``' counts (:func:`stepjepa.core.examples.row_counts`) from the stored columns."""
    import pyarrow.compute as pc

    table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
    truncated = np.asarray(table.column("truncated").to_numpy(zero_copy_only=False), dtype=bool)
    has_view = np.asarray(table.column("view_a_index").to_numpy(zero_copy_only=False)) != NO_VIEW
    pairs = int(pc.sum(pc.list_value_length(table.column("view_pairs"))).as_py() or 0) // 2
    return row_counts(examples, mode, truncated, has_view, pairs)


# --- building and loading ------------------------------------------------------------------------------------------


class TokenizingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM while tokenizing: ``args`` is (the signal number, what was stopped), as the CLI says it."""


# On while this process tokenizes: processes forked meanwhile (datasets' workers and their manager) leave Ctrl-C
# to this one and end at once on SIGTERM (what the pool's terminate sends them), so neither prints a traceback.
_TOKENIZING = {"on": False}


def _after_fork_in_child() -> None:
    if _TOKENIZING["on"]:
        _TOKENIZING["on"] = False
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except ValueError:  # not the child's main thread (cannot happen on CPython, which makes it so)
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def _signals_stop_tokenizing() -> Iterator[list[int]]:
    """The first SIGINT or SIGTERM raises KeyboardInterrupt here (the main thread) and is put in the list
    yielded; later ones are ignored, so the cleanup under way is not cut short."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # only the main thread may handle signals
        return

    def handler(signum, frame):
        if not received:
            received.append(signum)
            raise KeyboardInterrupt(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    _TOKENIZING["on"] = True
    try:
        yield received
    finally:
        _TOKENIZING["on"] = False
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


def _checksum(path: Path) -> str:
    """xxh3-128 of a file's bytes (``datasets`` fingerprints with xxhash too): several GB/s, so a cache hit
    can afford to check every byte it memory-maps."""
    import xxhash

    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _token_count(dataset) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.list_value_length(dataset.data.column("input_ids"))).as_py() or 0)


def _entry_problem(entry: Path, manifest: dict[str, Any]) -> str | None:
    """What makes a cache entry's Arrow files differ from those its manifest describes, or None."""
    for item in manifest["files"]:
        size = (entry / item["name"]).stat().st_size
        if size != item["bytes"]:
            return f"{item['name']} is {size} bytes, its manifest says {item['bytes']}"
        if _checksum(entry / item["name"]) != item["xxh3"]:
            return f"{item['name']} does not have the checksum its manifest records"
    return None


def _load_entry(entry: Path) -> tuple[Any, dict[str, Any]] | str:
    """The memory-mapped dataset and manifest of a whole cache entry, trusted only once its files match their
    sizes and checksums and its rows and tokens the manifest's counts; else why not ("" when there is none)."""
    import pyarrow as pa
    from datasets import Dataset, concatenate_datasets

    if not entry.exists():
        return ""
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        problem = _entry_problem(entry, manifest)
        if problem:
            return problem
        parts = [Dataset.from_file(str(entry / item["name"])) for item in manifest["files"]]
        dataset = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        if len(dataset) != manifest["counts"]["rows"] or _token_count(dataset) != manifest["tokens"]:
            return (f"{len(dataset)} rows of {_token_count(dataset)} tokens, its manifest says "
                    f"{manifest['counts']['rows']} of {manifest['tokens']}")
    except FileNotFoundError as exc:
        return f"{Path(exc.filename or MANIFEST).name} is missing"
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        return f"unreadable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return dataset, manifest


def _build(path: Path, tokenizer, settings: RowSettings, target: Path, parts: dict[str, Any],
           num_proc: int | None) -> int:
    """Tokenize ``path`` into a fresh directory, then move it to ``target`` whole; returns the process count.
    Only the bytes hashed for the key are tokenized (the file changed meanwhile: nothing is stored); SIGINT or
    SIGTERM stops the workers, removes the directory and raises :class:`TokenizingInterrupted`."""
    from datasets import Dataset, disable_progress_bars

    digest = hashlib.sha256()
    shards, examples = plan_shards(path, SHARD_BYTES, digest)
    if digest.hexdigest() != parts["data_sha256"]:
        raise changed_while_read(path)  # between the hash of the key and this pass
    if not examples:
        raise UsageError(f"{path}: file is empty")
    processes = max(1, min(num_proc or available_cores(), len(shards)))
    target.parent.mkdir(parents=True, exist_ok=True)
    # A plain mkdir, not mkdtemp's mode 0700: the entry gets the mode any directory of the user gets.
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    with _signals_stop_tokenizing() as received:
        try:
            plan = Dataset.from_list(shards)
            disable_progress_bars()  # its bar counts shards, not examples; the start line says what was done
            built = plan.map(
                _pack_shards, batched=True, batch_size=1, num_proc=processes if processes > 1 else None,
                remove_columns=plan.column_names, features=features(), load_from_cache_file=False,
                fn_kwargs={"path": str(path), "tokenizer": tokenizer, "settings": settings},
                cache_file_name=str(staging / "rows.arrow"), new_fingerprint=target.name, desc="tokenizing",
            )
            files = [{"name": Path(f["filename"]).name} for f in built.cache_files]
            for item in files:
                item.update(bytes=(staging / item["name"]).stat().st_size, xxh3=_checksum(staging / item["name"]))
            manifest = {"files": files, "counts": dict(count_rows(built, examples, settings.mode)),
                        "tokens": _token_count(built), "examples": examples, "key": parts}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            del built, plan
            try:
                os.replace(staging, target)
            except OSError:
                # Another process (a parallel sweep job, a run started meanwhile) stored the same entry first.
                if not isinstance(_load_entry(target), tuple):
                    raise
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if received:
                raise TokenizingInterrupted(received[0], f"by {signal.Signals(received[0]).name} while "
                                            f"tokenizing {path}; nothing was cached") from None
            raise
    return processes


def packed_rows(path: str | os.PathLike, tokenizer, model_name: str, settings: RowSettings,
                cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                num_proc: int | None = None, data_sha256: str | None = None) -> PackedRows:
    """The packed rows of a chat JSONL file: from the cache when it holds them, else tokenized (``num_proc``
    processes, default the machine's cores, at most one per MiB of data) and stored there. ``use_cache=False``
    neither reads nor writes the cache (rows go to a temporary directory, removed once memory-mapped).
    ``data_sha256``: the file's SHA-256 if already computed (not hashed again; the rows are stored only if the
    bytes tokenized are those). A damaged entry (an Arrow file cut or changed) is rebuilt, with a note."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    started = time.perf_counter()
    parts = cache_key_parts(path, tokenizer, model_name, settings, data_sha256)
    key = cache_key(parts)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    if use_cache:
        entry = root / key
        loaded = _load_entry(entry)
        hit = isinstance(loaded, tuple)
        processes = 0
        if not hit:
            if loaded:
                print(f"note: data cache entry {entry} is damaged ({loaded}); tokenizing {path} again",
                      file=sys.stderr, flush=True)
            shutil.rmtree(entry, ignore_errors=True)
            processes = _build(path, tokenizer, settings, entry, parts, num_proc)
            loaded = _load_entry(entry)
    else:
        scratch = Path(tempfile.mkdtemp(prefix="stepjepa-rows-"))
        try:
            entry = scratch / key
            processes = _build(path, tokenizer, settings, entry, parts, num_proc)
            loaded = _load_entry(entry)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # the open memory maps stay valid
        hit = False
    if not isinstance(loaded, tuple):
        raise UsageError(f"{entry}: the rows just stored do not read back ({loaded or 'gone'}); check the disk")
    dataset, manifest = loaded
    if not len(dataset):
        raise UsageError(f"--max_length {settings.max_length} leaves no assistant token in any example")
    return PackedRows(dataset=dataset, counts=Counter(manifest["counts"]),
                      tokens=manifest["tokens"], cache_hit=hit, location=entry if use_cache else None,
                      processes=processes, seconds=time.perf_counter() - started)


def with_regions(rows: list[dict[str, Any]], path: str | os.PathLike, tokenizer,
                 settings: RowSettings) -> list[dict[str, Any]]:
    """The rows with their debug-only ``regions`` (``--debug 7``), packed again from their chats."""
    from stepjepa.core.examples import pack_chat

    wanted = {row["example_index"] for row in rows}
    chats = {index: messages for index, messages in iter_chats(Path(path)) if index in wanted}
    out = []
    for row in rows:
        fresh = pack_chat(tokenizer, chats[row["example_index"]], settings)
        out.append({**row, "regions": fresh["regions"]})
    return out
