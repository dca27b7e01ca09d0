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


# --- reading a question back, independently of the templates: its stated facts and the answer they give ---------


def read_collection(question: str) -> tuple[list, int]:
    """``(["start" n, then ("buy" | "give" | "times" | "share", x) per event], how many there are now)``."""
    head = re.fullmatch(r"(\w+) has (\d+) (\w+)\. (.*) How many \3 does \1 have now\?", question)
    name, value, thing = head[1], int(head[2]), head[3]
    facts = [("start", value)]
    for event in re.findall(r"Then [^.]*\.", head[4]):
        for kind, pattern in (("buy", rf"Then {name} buys (\d+) more\."),
                              ("give", rf"Then {name} gives (\d+) to a friend\."),
                              ("times", rf"Then {name}'s collection grows to (\d+) times its size\."),
                              ("share", rf"Then {name} shares the {thing} equally among (\d+) boxes and keeps one box\.")):
            if match := re.fullmatch(pattern, event):
                x = int(match[1])
                break
        else:
            pytest.fail(f"unreadable event {event!r}")
        facts.append((kind, x))
        if kind == "share":
            assert value % x == 0, (question, value, x)  # equal shares
        value = {"buy": value + x, "give": value - x, "times": value * x, "share": value // x}[kind]
    assert " ".join(re.findall(r"Then [^.]*\.", head[4])) == head[4]  # nothing else is said
    return facts, value


def read_shopping(question: str) -> tuple[list, int]:
    """``([(count, item, price) per item, the note], the change)``."""
    head = re.fullmatch(r"(\w+) buys (.*) and pays with a (\d+) dollar note\. How much change, in dollars, does \1 get\?",
                        question)
    bought = [(int(c), item, int(p)) for c, item, p in re.findall(r"(\d+) (\w+) at (\d+) dollars each", head[2])]
    assert ", ".join(f"{c} {item} at {p} dollars each" for c, item, p in bought) == head[2]
    note, total = int(head[3]), sum(count * price for count, _, price in bought)
    # The smallest note that covers the bill with change left: change is never 0.
    notes = [20, 50, 100, 200, 500, 1000]
    assert note in notes and total < note and all(n <= total for n in notes[: notes.index(note)]), question
    return [*bought, note], note - total


def read_trip(question: str) -> tuple[list, int]:
    """``([(hours, km per hour) per leg], km in all)``."""
    head = re.fullmatch(r"(\w+) drives (.*)\. How many km does \1 drive in all\?", question)
    legs = [(int(h), int(v)) for h, v in re.findall(r"(\d+) hours at (\d+) km per hour", head[2])]
    assert ", then ".join(f"{h} hours at {v} km per hour" for h, v in legs) == head[2]
    return legs, sum(hours * speed for hours, speed in legs)


def read_ages(question: str) -> tuple[list, int]:
    """``([(person, "is", age) | (person, "older" | "younger", x, other) | (person, "twice" | "half", other)],
    the sum of the ages)``."""
    assert question.endswith(" What is the sum of their ages?")
    sentences = re.findall(r"[^.?]*\.", question.removesuffix(" What is the sum of their ages?"))
    first = re.fullmatch(r"(\w+) is (\d+) years old\.", sentences[0].strip())
    facts, age = [(first[1], "is", int(first[2]))], {first[1]: int(first[2])}
    for sentence in sentences[1:]:
        sentence = sentence.strip()
        if match := re.fullmatch(r"(\w+) is (\d+) years (older|younger) than (\w+)\.", sentence):
            person, x, kind, other = match[1], int(match[2]), match[3], match[4]
            facts.append((person, kind, x, other))
            age[person] = age[other] + x if kind == "older" else age[other] - x
        elif match := re.fullmatch(r"(\w+) is (twice|half) as old as (\w+)\.", sentence):
            person, kind, other = match[1], match[2], match[3]
            facts.append((person, kind, other))
            assert kind == "twice" or age[other] % 2 == 0, question
            age[person] = age[other] * 2 if kind == "twice" else age[other] // 2
        else:
            pytest.fail(f"unreadable sentence {sentence!r}")
    return facts, sum(age.values())


def template_of(problem: Problem) -> str:
    return ("trip" if " drives " in problem.question else "shopping" if " dollar note" in problem.question
            else "ages" if "sum of their ages" in problem.question else "collection")


READERS = {"collection": read_collection, "shopping": read_shopping, "trip": read_trip, "ages": read_ages}


def calculations(problem: Problem) -> list[list[tuple[str, str]]]:
    """Each step's ``(expression, result)`` calculations, as written."""
    return [EQUATION.findall(step) for step in problem.steps]


def check_shape(problem: Problem, n_steps: int, answer: int) -> None:
    """``n_steps`` steps, none with a blank line inside; the last ends with the boxed answer on a line of its own."""
    assert len(problem.steps) == n_steps and problem.answer == str(answer)
    assert all("\n\n" not in step and step.strip() == step for step in problem.steps)
    assert problem.steps[-1].endswith(f"\nThe answer is \\boxed{{{answer}}}.")
    assert all("boxed" not in step for step in problem.steps[:-1])


# --- the four templates worked by hand from scripted draws -------------------------------------------------------


def test_collection_by_hand():
    """Draws: Ava, stamps, start 12; "share" among 3 (12 % 3 == 0 and 12 / 3 = 4 >= 2); "times" 3.
    12 / 3 = 4 (one box kept), then 4 * 3 = 12: the answer is 12."""
    rng = ScriptedRng(ints=[12, 3], picks=["Ava", "stamps", "share", 3, "times"])
    problem = collection(rng, 2)
    check_shape(problem, 2, 12)
    assert read_collection(problem.question) == ([("start", 12), ("share", 3), ("times", 3)], 12)
    assert "Ava" in problem.question and "stamps" in problem.question
    assert calculations(problem) == [[("12 / 3", "4")], [("4 * 3", "12")]]


def test_shopping_by_hand():
    """Draws: Ben; items are the first two of the list (notebooks, pens); 3 notebooks at 4 and 2 pens at 15.
    3 * 4 = 12 and 2 * 15 = 30, bill 12 + 30 = 42; the smallest note above 42 is 50; change 50 - 42 = 8."""
    problem = shopping(ScriptedRng(ints=[3, 4, 2, 15], picks=["Ben"]), 3)
    check_shape(problem, 3, 8)
    assert read_shopping(problem.question) == ([(3, "notebooks", 4), (2, "pens", 15), 50], 8)
    assert calculations(problem) == [[("3 * 4", "12")], [("2 * 15", "30")], [("12 + 30", "42"), ("50 - 42", "8")]]
    # 4 notebooks at 5: a bill of exactly 20 is paid with a 50 note (20 would leave no change): 50 - 20 = 30.
    exact = shopping(ScriptedRng(ints=[4, 5], picks=["Ben"]), 2)
    check_shape(exact, 2, 30)
    assert read_shopping(exact.question) == ([(4, "notebooks", 5), 50], 30)
    assert calculations(exact) == [[("4 * 5", "20")], [("50 - 20", "30")]]


def test_trip_by_hand():
    """Draws: Ava; speeds are 5 times the drawn 12 and 10: 60 km/h for 2 h, 50 km/h for 3 h.
    60 * 2 = 120 and 50 * 3 = 150, in all 120 + 150 = 270 km."""
    problem = trip(ScriptedRng(ints=[12, 2, 10, 3], picks=["Ava"]), 3)
    check_shape(problem, 3, 270)
    assert read_trip(problem.question) == ([(2, 60), (3, 50)], 270)
    assert calculations(problem) == [[("60 * 2", "120")], [("50 * 3", "150")], [("120 + 150", "270")]]


def test_ages_by_hand():
    """Draws: the first three names (Ava, Ben, Chloe); Ava 20; Ben "twice" Ava's age; Chloe 5 "younger" than Ben.
    Ben 20 * 2 = 40, Chloe 40 - 5 = 35; together 20 + 40 + 35 = 95."""
    problem = ages(ScriptedRng(ints=[20, 5], picks=["twice", "younger"]), 3)
    check_shape(problem, 3, 95)
    assert read_ages(problem.question) == ([("Ava", "is", 20), ("Ben", "twice", "Ava"), ("Chloe", "younger", 5, "Ben")],
                                           95)
    assert calculations(problem) == [[("20 * 2", "40")], [("40 - 5", "35")], [("20 + 40 + 35", "95")]]


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


def test_every_question_states_what_its_answer_and_steps_say(problems):
    """Read back by hand-written rules, each question's stated numbers give its boxed answer, and it has one step
    per operation it states (a collection: one per event; shopping: one per item and the change; a trip: one per
    leg and the total; ages: one per person after the first and the sum)."""
    # Steps from the facts read: the start and one per event; items and the note; legs; people.
    steps_of = {"collection": lambda facts: len(facts) - 1, "shopping": len, "trip": lambda facts: len(facts) + 1,
                "ages": len}
    for problem in problems:
        template = template_of(problem)
        facts, answer = READERS[template](problem.question)
        check_shape(problem, steps_of[template](facts), answer)


def test_steps_range_and_templates(problems):
    counts = Counter(len(problem.steps) for problem in problems)
    assert set(counts) == {2, 3, 4, 5, 6}
    kinds = Counter(template_of(p) for p in problems)
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
