"""stepjepa: fine-tune causal LMs with next-token loss plus a JEPA objective."""

__version__ = "0.1.0"

# Public helpers importable from the package itself, loaded on first use so `import stepjepa`
# (and so every command's start) does not pay for their modules.
_LAZY = {"extract_answer": "stepjepa.data.answers", "regex_equivalent": "stepjepa.evaluation.regexes"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stepjepa' has no attribute {name!r}")
