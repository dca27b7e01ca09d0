"""The synthetic arithmetic problems: hand-checked templates, exact arithmetic, determinism, the test split."""

from __future__ import annotations

import json
import operator
import random
import re
from collections import Counter

import pytest

from stepjepa.core.steps import split_steps
from stepjepa.data.config import PrepareConfig, ValidateConfig
from stepjepa.data.prepare import run_prepare, run_validate
from stepjepa.data.synthetic import (
    Problem,
    ages,
    boxed_final_step,
    collection,
    n_test_rows,
    paired_test_path,
    shopping,
    synthetic_problem,
    synthetic_splits,
    trip,
)

# "a op b [op c ...] = r": every calculation the templates write.
EQUATION = re.compile(r"(\d+(?: [-+*/] \d+)+) = (\d+)")
OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


class ScriptedRng:
    """Stands in for random.Random: ``randint`` returns the scripted ints in order, ``choice`` the scripted picks
    (each must be one of the offered values), ``sample`` the first k values."""

    def __init__(self, ints: list[int], picks: list):
        self.ints, self.picks = list(ints), list(picks)

    def randint(self, low: int, high: int) -> int:
        value = self.ints.pop(0)
        assert low <= value <= high
        return value

    def choice(self, values):
        value = self.picks.pop(0)
        assert value in values, (value, values)
        return value

    def sample(self, values, k):
        return list(values[:k])


def test_collection_by_hand():
    # 12 stamps shared among 3 boxes -> 4; grows 3 times -> 12.
    rng = ScriptedRng(ints=[12, 3], picks=["Ava", "stamps", "share", 3, "times"])
    problem = collection(rng, 2)
    assert problem.question == (
        "Ava has 12 stamps. Then Ava shares the stamps equally among 3 boxes and keeps one box. "
        "Then Ava's collection grows to 3 times its size. How many stamps does Ava have now?"
    )
    assert problem.steps == [
        "Each of the 3 boxes holds 12 / 3 = 4 stamps.",
        "Growing 3 times, the collection has 4 * 3 = 12 stamps.\nThe answer is \\boxed{12}.",
    ]
    assert problem.answer == "12"


def test_shopping_by_hand():
    # 3 * 4 = 12 and 2 * 15 = 30, bill 42, smallest note above it 50, change 8.
    problem = shopping(ScriptedRng(ints=[3, 4, 2, 15], picks=["Ben"]), 3)
    assert problem.question == (
        "Ben buys 3 notebooks at 4 dollars each, 2 pens at 15 dollars each and pays with a 50 dollar note. "
        "How much change, in dollars, does Ben get?"
    )
    assert problem.steps == [
        "The notebooks cost 3 * 4 = 12 dollars.",
        "The pens cost 2 * 15 = 30 dollars.",
        "The bill is 12 + 30 = 42 dollars, so the change is 50 - 42 = 8 dollars.\nThe answer is \\boxed{8}.",
    ]
    # A bill of exactly 20 is paid with a 50 note: the change is never 0.
    assert shopping(ScriptedRng(ints=[4, 5], picks=["Ben"]), 2).steps[-1].startswith("The change is 50 - 20 = 30 dollars.")


def test_trip_by_hand():
    # 12 * 5 = 60 km/h for 2 h and 10 * 5 = 50 km/h for 3 h: 120 + 150 = 270 km.
    problem = trip(ScriptedRng(ints=[12, 2, 10, 3], picks=["Ava"]), 3)
    assert problem.question == "Ava drives 2 hours at 60 km per hour, then 3 hours at 50 km per hour. How many km does Ava drive in all?"
    assert problem.steps == [
        "The first leg covers 60 * 2 = 120 km.",
        "The second leg covers 50 * 3 = 150 km.",
        "The whole trip is 120 + 150 = 270 km.\nThe answer is \\boxed{270}.",
    ]


def test_ages_by_hand():
    # Ava 20, Ben twice that 40, Chloe 5 younger 35: 20 + 40 + 35 = 95.
    problem = ages(ScriptedRng(ints=[20, 5], picks=["twice", "younger"]), 3)
    assert problem.question == (
        "Ava is 20 years old. Ben is twice as old as Ava. Chloe is 5 years younger than Ben. What is the sum of their ages?"
    )
    assert problem.steps == [
        "Ben is 20 * 2 = 40 years old.",
        "Chloe is 40 - 5 = 35 years old.",
        "Together they are 20 + 40 + 35 = 95 years old.\nThe answer is \\boxed{95}.",
    ]
    assert problem.answer == "95"


def test_row_format():
    problem = Problem("Q?", ["a.", boxed_final_step("b.", "3")], "3")
    assert problem.to_row("Sys") == {
        "messages": [
            {"role": "system", "content": "Sys"},
            {"role": "user", "content": "Q?"},
            {"role": "assistant", "content": "a.\n\nb.\nThe answer is \\boxed{3}."},
        ],
        "question": "Q?",
        "answer": "3",
        "total_steps": 2,
    }


def evaluate(expression: str) -> float:
    """Left to right: the templates write single operations or sums, where that is the usual order."""
    tokens = expression.split(" ")
    value = float(tokens[0])
    for op, number in zip(tokens[1::2], tokens[2::2]):
        value = OPERATORS[op](value, float(number))
    return value


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    rng = random.Random(7)
    return [synthetic_problem(rng) for _ in range(400)]


def test_every_calculation_is_exact_and_ends_in_the_answer(problems):
    for problem in problems:
        equations = [EQUATION.findall(step) for step in problem.steps]
        # Every step calculates something, and every calculation is right in integers.
        assert all(equations), problem.steps
        for expression, result in (e for step in equations for e in step):
            assert evaluate(expression) == int(result), (expression, result)
        assert equations[-1][-1][1] == problem.answer
        assert problem.answer.isdigit() and int(problem.answer) > 0
        assert problem.steps[-1].endswith(f"\nThe answer is \\boxed{{{problem.answer}}}.")


def test_steps_range_and_templates(problems):
    counts = Counter(len(problem.steps) for problem in problems)
    assert set(counts) == {2, 3, 4, 5, 6}
    kinds = Counter(
        "trip" if " drives " in p.question else "shopping" if " dollar note" in p.question
        else "ages" if "sum of their ages" in p.question else "collection"
        for p in problems
    )
    # Four templates, each about a quarter of 400.
    assert set(kinds) == {"trip", "shopping", "ages", "collection"} and min(kinds.values()) > 60
    for problem in problems:
        assert split_steps("\n\n".join(problem.steps)) == problem.steps


def test_seed_fixes_the_data():
    first, again, other = synthetic_splits(40, seed=3), synthetic_splits(40, seed=3), synthetic_splits(40, seed=4)
    assert first == again
    assert first[0] != other[0]


def test_test_split_is_a_tenth_and_disjoint():
    assert [n_test_rows(n) for n in (1, 9, 10, 25, 100)] == [1, 1, 1, 2, 10]
    train, test = synthetic_splits(200, seed=0)
    assert len(train) == 200 and len(test) == 20
    assert not {p.question for p in train} & {p.question for p in test}
    assert len({p.question for p in train}) == 200
    assert str(paired_test_path("data/synth.jsonl")) == "data/synth_test.jsonl"
    assert str(paired_test_path("data/synth")) == "data/synth_test.jsonl"


def test_prepare_synthetic_writes_both_splits_that_validate(tmp_path, capsys):
    output = tmp_path / "synth.jsonl"
    assert run_prepare(PrepareConfig(output=str(output), synthetic=30, seed=1)) == 0
    test_file = tmp_path / "synth_test.jsonl"
    train_rows = [json.loads(line) for line in output.open()]
    test_rows = [json.loads(line) for line in test_file.open()]
    assert (len(train_rows), len(test_rows)) == (30, 3)
    stats = json.loads((tmp_path / "synth.jsonl.stats.json").read_text())
    assert (stats["format"], stats["rows_written"], stats["test_rows"]) == ("synthetic", 30, 3)
    assert sum(stats["steps_per_example"].values()) == 30
    assert all(row["total_steps"] == len(split_steps(row["messages"][2]["content"])) for row in train_rows)
    assert run_validate(ValidateConfig(file=str(output), step_jepa=True)) == 0
    assert run_validate(ValidateConfig(file=str(test_file), step_jepa=True)) == 0
    assert "test split: 3 rows" in capsys.readouterr().out


def test_prepare_synthetic_keeps_an_existing_test_split(tmp_path):
    (tmp_path / "synth_test.jsonl").write_text("precious\n")
    with pytest.raises(ValueError, match="test split"):
        run_prepare(PrepareConfig(output=str(tmp_path / "synth.jsonl"), synthetic=5))
    assert (tmp_path / "synth_test.jsonl").read_text() == "precious\n"
    assert not (tmp_path / "synth.jsonl").exists()
