"""Write docs/FLAGS.md: one table of flags (name, type and bounds, default, help) per command, generated from the
commands' config dataclasses, so the document cannot drift from ``--help`` (tests/test_flags.py checks it is current).

    python scripts/flags_doc.py            # rewrite docs/FLAGS.md
    python scripts/flags_doc.py --check    # exit 1 when docs/FLAGS.md differs from the configs
"""

from __future__ import annotations

import sys
from pathlib import Path

from stepjepa.commands import flags_markdown

FLAGS_DOC = Path(__file__).resolve().parents[1] / "docs" / "FLAGS.md"


def main(argv: list[str]) -> int:
    text = flags_markdown()
    if "--check" in argv:
        current = FLAGS_DOC.read_text(encoding="utf-8") if FLAGS_DOC.is_file() else ""
        if current != text:
            print(f"{FLAGS_DOC} is out of date: python scripts/flags_doc.py", file=sys.stderr)
            return 1
        return 0
    FLAGS_DOC.write_text(text, encoding="utf-8")
    print(f"wrote {FLAGS_DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
