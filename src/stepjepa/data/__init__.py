"""Data files shared by every command: JSON Lines reading and atomic writing, chat rows, the input formats
(gsm8k, trace, chat) and their conversion, test problems, and statistics."""

from stepjepa.data.chat import DEFAULT_SYSTEM_PROMPT, ROLES, chat_problem, chat_row, load_chats
from stepjepa.data.convert import FORMATS, Conversion, convert_records, detect_format, is_hub_id, load_hub_records
from stepjepa.data.fields import Dropped
from stepjepa.data.files import atomic_path, give_plain_modes, plain_file_mode, write_json_atomic, write_jsonl_atomic
from stepjepa.data.gsm8k import gsm8k_final, gsm8k_problem
from stepjepa.data.jsonl import Record, append_jsonl, json_line, read_jsonl, read_records
from stepjepa.data.trace import strip_think, trace_problem, trace_steps

__all__ = [
    "DEFAULT_SYSTEM_PROMPT", "FORMATS", "ROLES", "Conversion", "Dropped", "Record", "append_jsonl", "atomic_path",
    "chat_problem", "chat_row", "convert_records", "detect_format", "give_plain_modes", "gsm8k_final",
    "gsm8k_problem", "is_hub_id", "json_line", "load_chats", "load_hub_records", "plain_file_mode", "read_jsonl",
    "read_records", "strip_think", "trace_problem", "trace_steps", "write_json_atomic", "write_jsonl_atomic",
]
