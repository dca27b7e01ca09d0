"""Final answers of math solutions: extraction from free text, normalisation, comparison.

Two extractors follow lm-evaluation-harness's two GSM8K scores: ``extract_strict``
accepts only a declared answer (the last ``\\boxed{...}``, else the last ``#### N``
line); ``extract_answer`` (flexible) falls back to the last number in the text.
Answers are compared as exact rationals, so ``1,000``, ``$1000.00`` and ``1000``
agree, and so do ``0.5``, ``1/2`` and ``\\frac{1}{2}``. No function here raises on
any string.
"""

from __future__ import annotations

import re
from fractions import Fraction

# "\boxed{", also "\fbox{" and a bare "boxed{" (small models drop the backslash).
_BOXED = re.compile(r"(?:boxed|fbox)\s*\{")
# GSM8K's final-answer marker: "#### 72" ends a published solution.
HASH_MARK = "####"
_HASHES = re.compile(re.escape(HASH_MARK) + r"([^\n]*)")
# \frac{a}{b}, \dfrac{a}{b}, \tfrac{a}{b}.
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_PLAIN = re.compile(r"\s*-?[0-9]+(?:\.[0-9]+)?\s*")
# A comma (or LaTeX thin space) between digits, followed by exactly three digits, separates thousands.
_THOUSANDS = re.compile(r"(?<=[0-9])(?:,|\\,|\{,\})(?=[0-9]{3}(?![0-9]))")
# ASCII digits only: other scripts' digits are not answers. A minus sign counts only where it
# cannot be subtraction (not after a digit, letter or closing bracket).
_NUMBER = re.compile(r"(?:(?<![\w)\]}])-)?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:\s*/\s*[0-9]+(?:\.[0-9]+)?)?")
_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2014": "-"})


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` whose braces balance (nested braces kept), or None."""
    if not isinstance(text, str):
        return None
    for match in reversed(list(_BOXED.finditer(text))):
        depth = 1
        for pos in range(match.end(), len(text)):
            if text[pos] == "{":
                depth += 1
            elif text[pos] == "}":
                depth -= 1
                if depth == 0:
                    return text[match.end() : pos]
    return None


def _plain_fraction(match: re.Match) -> str:
    """``\\frac{3}{4}`` -> ``3/4``; fractions of anything but plain numbers are left as they are."""
    numerator, denominator = match.group(1), match.group(2)
    if not (_PLAIN.fullmatch(numerator) and _PLAIN.fullmatch(denominator)):
        return match.group(0)
    # A space keeps "2\frac{1}{2}" from reading as 21/2.
    gap = " " if match.start() > 0 and match.string[match.start() - 1].isdigit() else ""
    return f"{gap}{numerator.strip()}/{denominator.strip()}"


def _clean(text: str) -> str:
    """Unicode minus signs, LaTeX fractions, dollar signs and thousands separators normalised away."""
    text = text.translate(_MINUS_SIGNS)
    text = _LATEX_FRAC.sub(_plain_fraction, text)
    text = text.replace("\\$", "").replace("$", "")
    return _THOUSANDS.sub("", text)


def _to_fraction(token: str) -> Fraction | None:
    """The exact value of one matched number token (``-3``, ``2.50``, ``3/4``), or None (``1/0``)."""
    try:
        if "/" in token:
            numerator, denominator = token.split("/")
            return Fraction(numerator.strip()) / Fraction(denominator.strip())
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def _canonical(value: Fraction) -> str:
    """``18``, ``-2.5`` or ``1/3``: integers bare, terminating decimals without trailing zeros, else p/q."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    # A terminating decimal: scale to an integer and place the point.
    digits = 0
    scaled = value
    while scaled.denominator != 1:
        scaled *= 10
        digits += 1
    sign = "-" if scaled < 0 else ""
    magnitude = str(abs(scaled.numerator)).rjust(digits + 1, "0")
    return f"{sign}{magnitude[:-digits]}.{magnitude[-digits:]}"


def _numbers(text: str) -> list[Fraction]:
    """Every readable number of ``text``, in order."""
    values = (_to_fraction(m.group(0).replace(" ", "")) for m in _NUMBER.finditer(_clean(text)))
    return [v for v in values if v is not None]


def normalize_number(s: str) -> str | None:
    """The canonical form of the number an answer states (``"$1,234.50"`` -> ``"1234.5"``), or None.

    Units, ``%`` and LaTeX wrappers are ignored; after an ``=`` only the right-hand
    side counts (``x = 5`` -> ``5``); otherwise the first number is the answer.
    """
    if not isinstance(s, str):
        return None
    if "=" in s:
        s = s.rsplit("=", 1)[1]
    values = _numbers(s)
    return _canonical(values[0]) if values else None


def hash_answer(text: str) -> str | None:
    """What follows the last ``####`` marker up to its line's end (GSM8K's final-answer line), stripped; or None."""
    if not isinstance(text, str):
        return None
    found = _HASHES.findall(text)
    return found[-1].strip() if found else None


def extract_strict(text: str) -> str | None:
    """The declared answer only: the last ``\\boxed{...}``, else the last ``#### N`` line; normalised."""
    if not isinstance(text, str):
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        answer = normalize_number(boxed)
        if answer is not None:
            return answer
    declared = hash_answer(text)
    return normalize_number(declared) if declared is not None else None


def extract_answer(text: str) -> str | None:
    """The flexible answer: :func:`extract_strict`, else the last number anywhere in the text."""
    answer = extract_strict(text)
    if answer is not None or not isinstance(text, str):
        return answer
    values = _numbers(text)
    return _canonical(values[-1]) if values else None


def answers_match(a: str | None, b: str | None) -> bool:
    """Whether two answers state the same number (both normalised first; None never matches)."""
    left, right = normalize_number(a), normalize_number(b)
    return left is not None and left == right
