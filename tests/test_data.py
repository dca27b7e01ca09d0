"""Chat JSONL reading and writing."""

from __future__ import annotations

import json

import pytest

from stepjepa.data import append_jsonl, chat_problem, load_chats, read_jsonl, write_jsonl_atomic
from stepjepa.errors import UsageError


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
    with pytest.raises(UsageError, match=r"bad.jsonl:2: invalid JSON"):
        read_jsonl(path)


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
    with pytest.raises(UsageError, match=r"chats.jsonl:2: roles are \['user'\]"):
        load_chats(path)
