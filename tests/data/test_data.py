"""JSON Lines reading, atomic writing, chat rows."""

from __future__ import annotations

import json

import pytest

from stepjepa.data import (
    append_jsonl,
    atomic_path,
    chat_problem,
    load_chats,
    read_jsonl,
    read_records,
    write_json_atomic,
    write_jsonl_atomic,
)


def test_line_separators_are_escaped_so_rows_survive_splitlines(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl_atomic(path, [{"text": "a\u2028b"}, {"text": "c"}])
    append_jsonl(path, {"text": "d\u2029e"})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["a\u2028b", "c", "d\u2029e"]


def test_byte_order_mark_and_blank_lines_are_read(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"x": 1}\n\n{"x": 2}\n')
    assert read_jsonl(path) == [(1, {"x": 1}), (3, {"x": 2})]


def test_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"x": 1}\n{"x": \n')
    # '{"x": ' ends at column 6: the missing value is looked for at column 7.
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON \(Expecting value at column 7\)$"):
        read_jsonl(path)


def test_bad_byte_names_its_column_and_costs_one_line_in_the_lenient_reader(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"x": 1}\n{"x": "caf\xe9"}\n{"x": 3}\n')
    # b'{"x": "caf' is 10 bytes: the bad byte is the 11th.
    with pytest.raises(ValueError, match=r"latin1.jsonl:2: not UTF-8 text \(byte 0xe9 at column 11\)$"):
        read_jsonl(path)
    assert read_records(path) == [(1, {"x": 1}, None), (2, None, "not UTF-8 text"), (3, {"x": 3}, None)]


def test_missing_empty_and_non_json_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "blank.jsonl").write_text("\n \n")
    with pytest.raises(ValueError, match="file is empty"):
        read_records(tmp_path / "blank.jsonl")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no line is JSON"):
        read_records(tmp_path / "table.csv")


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path) -> None:
    target = tmp_path / "report.md"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("plotting failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_json_writers_replace_the_file_whole(tmp_path):
    path = tmp_path / "out" / "rows.jsonl"
    assert write_jsonl_atomic(path, [{"a": 1}, {"b": 2}]) == 2
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"b": 2}\n'
    with pytest.raises(ValueError):  # NaN is not JSON: the old file stays, no temporary file is left
        write_jsonl_atomic(path, [{"a": 3}, {"b": float("nan")}])
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"b": 2}\n'
    write_json_atomic(tmp_path / "out" / "s.json", {"k": [1]})
    assert json.loads((tmp_path / "out" / "s.json").read_text()) == {"k": [1]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["rows.jsonl", "s.json"]


@pytest.mark.parametrize(
    "row,problem",
    [
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, None),
        ({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}, "roles are"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}, "assistant content is empty"),
        ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}, "user content is not a string"),
        ({"text": "x"}, "no 'messages' field"),
        ({"messages": []}, "not a non-empty list"),
    ],
)
def test_chat_problems(row, problem):
    found = chat_problem(row)
    assert (found is None) if problem is None else (problem in found)


def test_load_chats_reports_the_first_bad_line(tmp_path):
    path = tmp_path / "chats.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    with pytest.raises(ValueError, match=r"chats.jsonl:2: roles are \['user'\]"):
        load_chats(path)


def test_gsm8k_final_is_the_bare_number_of_the_last_marker():
    from stepjepa.data import gsm8k_final

    assert gsm8k_final("Natalia sold 48/2 = 24 clips.\n#### $1,234") == "1234"
    assert gsm8k_final("#### 1 000") == "1000" and gsm8k_final("72") is None
