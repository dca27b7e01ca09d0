"""NL-RX regexes: parsing, whole-string matching against Python's re, equivalence of hand-checked pairs."""

from __future__ import annotations

import itertools
import json
import re

import pytest
from conftest import SHARED_DATA

from stepjepa.evaluation.regexes import MAX_REPEAT, RegexSyntaxError, parse_regex, regex_equivalent, regex_fullmatch

# Equivalent pairs written differently; why each holds is in its comment.
EQUIVALENT = [
    ("(a|b)*", "(a*b*)*"),  # both: every string over {a, b}
    ("a{2,}", "aa+"),  # two or more a's
    ("a{2,}", "aaa*"),
    ("a{1,3}", "a|aa|aaa"),
    ("(.){3,}", "...(.*)"),  # three or more characters
    ("[0-9]", "[0-4]|[5-9]"),
    ("[AEIOUaeiou]", "[AEIOU]|[aeiou]"),
    (".*dog.*", "(.*)(dog)(.*)"),
    ("(.*dog.*)&(.*)", ".*dog.*"),  # .* is everything: intersecting with it changes nothing
    ("~(~(x[0-9]))", "x[0-9]"),  # double complement
    ("~((a)|(b))", "~(a)&~(b)"),  # De Morgan
    ("~(.*)", "(a)&(b)"),  # both the empty language
    ("~(a)", "()|[^a]|..(.)*"),  # not "a": the empty string, one other character, or two or more
    ("\\bdog\\b", "bdogb"),  # brics reads \b as the letter b
    # NL-RX test row 3: a capital first, 'dog' later, ending lower-case. 'dog' ends with the
    # lower-case g, so the end condition only matters when something follows the last 'dog'.
    ("([A-Z].*dog.*)&((.*)([a-z]))", "[A-Z].*dog(.*[a-z])?"),
]

# Not equivalent, each with a string that exactly one of the two matches.
DIFFERENT = [
    ("a*", "a+", ""),
    ("(dog){2,}", "(dog)+", "dog"),
    (".*dog.*", ".+dog.*", "dog"),
    ("~(dog)", "~(dog)&(.+)", ""),
    ("[A-Za-z]", "[A-Z]|[a-y]", "z"),
    # A character neither regex names: '.' matches it, the printable-ASCII class does not.
    (".", "[ -~]", "é"),
    ("~([0-9])", ".*", "5"),
    ("([0-9]){3,}", "([0-9]){4,}", "123"),
    ("\\bdog\\b", "dog", "dog"),
]


@pytest.mark.parametrize(("a", "b"), EQUIVALENT)
def test_equivalent_pairs(a: str, b: str) -> None:
    assert regex_equivalent(a, b)
    assert regex_equivalent(b, a)


@pytest.mark.parametrize(("a", "b", "witness"), DIFFERENT)
def test_different_pairs_and_their_witness(a: str, b: str, witness: str) -> None:
    assert not regex_equivalent(a, b)
    assert regex_fullmatch(a, witness) != regex_fullmatch(b, witness)


# Regexes without & and ~ mean the same in Python's re (none of these uses an escape).
PLAIN = ["(a|b)*c", "a{2,}b?", "[a-c]+|c*", "(ab|a)*", ".a.", "([0-9]){2,}[^0-9]*", "(a*)(b*)(a*)", "a{1,2}b{0,1}"]
STRINGS = ["".join(chars) for n in range(5) for chars in itertools.product("ab0c", repeat=n)]


@pytest.mark.parametrize("regex", PLAIN)
def test_fullmatch_agrees_with_python_re(regex: str) -> None:
    """Every string of up to 4 characters over {a, b, 0, c}: 341 strings, each judged by both."""
    matched = [s for s in STRINGS if regex_fullmatch(regex, s)]
    assert matched == [s for s in STRINGS if re.fullmatch(regex, s)]


@pytest.mark.parametrize(("left", "right"), [("(a|b)*c", ".*b.*"), ("[a-c]+", "a{2,}b?")])
def test_intersection_and_complement_are_set_operations(left: str, right: str) -> None:
    """Strings of up to 3 characters over {a, b, 0, c} (85; each check builds its automaton anew)."""
    for s in (s for s in STRINGS if len(s) <= 3):
        in_left, in_right = bool(re.fullmatch(left, s)), bool(re.fullmatch(right, s))
        assert regex_fullmatch(f"({left})&({right})", s) == (in_left and in_right), s
        assert regex_fullmatch(f"~({left})", s) == (not in_left), s
        assert regex_fullmatch(f"~({left})|({right})", s) == ((not in_left) or in_right), s


def test_precedence_follows_brics() -> None:
    # '|' loosest, then '&', then concatenation: a&b|c is (a&b)|c, so it matches "c".
    assert regex_fullmatch("a&b|c", "c") and not regex_fullmatch("a&(b|c)", "c")
    # ab&a.: concatenation binds tighter than '&', so "ab" is in both sides.
    assert regex_fullmatch("ab&a.", "ab")
    # ~ binds tighter than *: ~a* is (~a)*, pieces that are each not "a". "aa" is one such piece;
    # "a" cannot be cut into such pieces. ~(a*) is the other reading: no string of a's.
    assert regex_fullmatch("~a*", "aa") and not regex_fullmatch("~a*", "a")
    assert regex_fullmatch("~(a*)", "b") and not regex_fullmatch("~(a*)", "aa")


@pytest.mark.parametrize(
    ("regex", "message"),
    [
        ("", "empty regex"),
        ("(a", "missing '\\)' at position 2"),
        ("a)", "unexpected '\\)' at position 1"),
        ("*a", "'\\*' where an expression is expected at position 0"),
        ("a||b", "'\\|' where an expression is expected at position 2"),
        ("a&", "ends where an expression is expected"),
        ("[]", "empty character class"),
        ("[a-", "ends inside a character class"),
        ("[z-a]", "range z-a runs backwards"),
        ("a{3,1}", "bounds reversed"),
        ("a{2", "expected '}'"),
        ("a{x}", "expected a number"),
        (f"a{{{MAX_REPEAT + 1}}}", f"repetition count above {MAX_REPEAT}"),
        ("a" * 301, "longer than 300"),
        ("\\", "ends inside an escape"),
        ("#", "unsupported brics syntax '#'"),
        ('"dog"', "unsupported brics syntax '\"'"),
    ],
)
def test_invalid_regexes_say_why(regex: str, message: str) -> None:
    with pytest.raises(RegexSyntaxError, match=message):
        parse_regex(regex)
    with pytest.raises(ValueError):
        regex_equivalent(regex, "a")
    with pytest.raises(ValueError):
        regex_equivalent("a", regex)


def test_importable_from_the_package() -> None:
    import stepjepa

    assert stepjepa.regex_equivalent("(a)(b)", "ab")
    from stepjepa import extract_answer, regex_equivalent  # noqa: F401

    assert extract_answer("#### 42") == "42"


@pytest.mark.shared_data
def test_every_nlrx_gold_regex_parses_and_equals_a_rewrite() -> None:
    """The 2,000 test answers parse; 50 of them equal themselves in brackets, never their complement,
    and with their complement make up every string."""
    answers = [json.loads(line)["messages"][-1]["content"]
               for line in (SHARED_DATA / "nlrx_synth" / "synth_test.jsonl").read_text().splitlines()]
    assert len(answers) == 2000
    for answer in answers:
        parse_regex(answer)
    for answer in answers[:50]:
        assert regex_equivalent(answer, f"({answer})")
        assert not regex_equivalent(answer, f"~({answer})")
        assert regex_equivalent(f"({answer})|~({answer})", ".*")
