"""Answer extraction on hand-written responses: boxed, nested braces, ####, signs, decimals, commas, units."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepjepa.data.answers import answers_match, extract_answer, extract_strict, last_boxed, normalize_number

# (response, flexible answer, strict answer), each worked out by reading the response.
RESPONSES = [
    # boxed
    ("Step 1: 16 - 3 - 4 = 9.\n\nStep 2: 9 * 2 = 18.\n\nThe answer is \\boxed{18}.", "18", "18"),
    ("\\boxed{5} was a guess; the real total is \\boxed{7}", "7", "7"),
    ("The result is $\\boxed{\\$1,250}$ per month.", "1250", "1250"),
    ("\\boxed{\\frac{1}{2}}", "0.5", "0.5"),
    ("So each gets \\boxed{\\dfrac{15}{6}} pies.", "2.5", "2.5"),
    ("\\boxed{-\\frac{3}{4}}", "-0.75", "-0.75"),
    ("\\boxed{{42}}", "42", "42"),
    ("Total: \\boxed{\\text{18 dollars}}", "18", "18"),
    ("\\boxed{x = 12}", "12", "12"),
    ("\\boxed{3 + 4 = 7}", "7", "7"),
    ("\\boxed{25\\%}", "25", "25"),
    ("\\boxed{ 1,000,000 }", "1000000", "1000000"),
    ("\\boxed{-15}", "-15", "-15"),
    ("\\boxed{12.50}", "12.5", "12.5"),
    ("\\boxed{7.0}", "7", "7"),
    ("\\boxed{1{,}200}", "1200", "1200"),
    ("boxed{64} (the backslash got lost)", "64", "64"),
    ("The answer is \\boxed{9", "9", None),  # unbalanced brace: not a declared answer, last number is 9
    ("\\boxed{} so 6 apples remain", "6", None),  # empty box: nothing declared
    # #### lines
    ("Janet sells 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18", "18", "18"),
    ("#### $70,000", "70000", "70000"),
    ("#### -3", "-3", "-3"),
    ("#### 0.25", "0.25", "0.25"),
    ("#### 1 \n\nI hope this helps! Ask about 3 more.", "1", "1"),
    ("first try: #### 10\nsecond try: #### 12", "12", "12"),
    ("#### 540 meters", "540", "540"),
    ("\\boxed{8} ... #### 9", "8", "8"),  # the boxed answer wins over ####
    # last number only (flexible)
    ("He runs 3 * 3 = 9 sprints, 9 * 60 = 540 meters.", "540", None),
    ("The temperature dropped to -7 degrees.", "-7", None),
    ("The difference is 10-4=6", "6", None),
    ("It costs $1,234.56 in total.", "1234.56", None),
    ("So the answer is 3.5 hours.", "3.5", None),
    ("She needs 3/4 of a cup.", "0.75", None),
    ("The answer is 2,5 liters", "5", None),  # "2,5" is no thousands group: the last number is 5
    ("He scored 85%.", "85", None),
    ("The total is \u22125 points.", "-5", None),  # Unicode minus sign
    ("That's .5 of the cake", "0.5", None),
    # no number at all
    ("I don't know.", None, None),
    ("", None, None),
    ("#### ", None, None),
    ("\\boxed{yes}", None, None),
]


@pytest.mark.parametrize(("response", "flexible", "strict"), RESPONSES)
def test_extraction_table(response: str, flexible: str | None, strict: str | None) -> None:
    assert extract_answer(response) == flexible
    assert extract_strict(response) == strict


def test_table_is_large_enough() -> None:
    assert len(RESPONSES) >= 30


def test_last_boxed_keeps_nested_braces() -> None:
    assert last_boxed("\\boxed{a} then \\boxed{\\frac{1}{\\sqrt{4}}}") == "\\frac{1}{\\sqrt{4}}"
    assert last_boxed("\\boxed{open") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("$1,234.50", "1234.5"),
        ("18.00", "18"),
        ("-0.50", "-0.5"),
        ("6/4", "1.5"),
        ("1/3", "1/3"),  # no terminating decimal: kept as a reduced fraction
        ("2/6", "1/3"),
        ("007", "7"),
        ("12 cm", "12"),
        ("50%", "50"),
        ("3/0", None),
        ("none", None),
    ],
)
def test_normalize_number(raw: str, expected: str | None) -> None:
    assert normalize_number(raw) == expected


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("1,000", "1000", True),
        ("$1000.00", "1000", True),
        ("0.5", "1/2", True),
        ("\\frac{1}{2}", "0.5", True),
        ("18 dollars", "18", True),
        ("-3", "3", False),
        ("0.33", "1/3", False),
        (None, "5", False),
        (None, None, False),
        ("cat", "cat", False),  # no number on either side: not an answer
    ],
)
def test_answers_match(a: str | None, b: str | None, same: bool) -> None:
    assert answers_match(a, b) is same


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789-.,/$%{}\\boxedfrac#= \n\u2212x")) | st.characters(), max_size=60))
def test_never_raises(text: str) -> None:
    for function in (extract_answer, extract_strict, normalize_number):
        result = function(text)
        assert result is None or isinstance(result, str)
    assert isinstance(answers_match(text, text), bool)


def test_hash_answer_is_the_text_after_the_last_marker_on_its_line():
    from stepjepa.data.answers import hash_answer

    assert hash_answer("3 + 4 = 7\n#### 7\nthen\n#### $1,234 \nrest") == "$1,234"
    assert hash_answer("####") == "" and hash_answer("no marker") is None and hash_answer(None) is None
