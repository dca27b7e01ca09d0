"""Synthetic multi-step arithmetic word problems: offline training data with exact integer answers.

Four templates (a changing collection, a shopping bill, a trip in legs, a family's ages)
write a question and one reasoning step per arithmetic operation, 2 to 6 steps. Every
number is drawn from one ``random.Random(seed)``, so a seed fixes the whole data set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from stepjepa.core.errors import UsageError

MIN_STEPS, MAX_STEPS = 2, 6
NAMES = ["Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam", "Mila", "Noah"]
ORDINALS = ["first", "second", "third", "fourth", "fifth"]


@dataclass
class Problem:
    """A question, its reasoning steps (the last one states the boxed answer) and the final answer."""

    question: str
    steps: list[str]
    answer: str

    def to_row(self, system_prompt: str) -> dict:
        """The output row: ``messages`` [system, user, assistant], ``question``, ``answer``, ``total_steps``."""
        return {
            "messages": [
                {"role": "system", "content": system_prompt},
                {"role": "user", "content": self.question},
                {"role": "assistant", "content": "\n\n".join(self.steps)},
            ],
            "question": self.question,
            "answer": self.answer,
            "total_steps": len(self.steps),
        }


def boxed_final_step(step: str, answer: str) -> str:
    """``step`` followed, on a line of its own inside the same step, by the boxed final answer."""
    return f"{step}\nThe answer is \\boxed{{{answer}}}."


def _finish(question: str, steps: list[str], answer: int) -> Problem:
    steps[-1] = boxed_final_step(steps[-1], str(answer))
    return Problem(question, steps, str(answer))


def collection(rng: random.Random, n_steps: int) -> Problem:
    """A collection changed by ``n_steps`` operations (buy, give away, multiply, share out)."""
    name = rng.choice(NAMES)
    thing = rng.choice(["marbles", "stickers", "stamps", "shells", "cards", "beads"])
    start = value = rng.randint(6, 60)
    events, steps = [], []
    for _ in range(n_steps):
        # Operands and results stay at 2 or more, so every count reads as a plural.
        divisors = [k for k in range(2, 7) if value % k == 0 and value // k >= 2]
        choices = ["buy", "buy"] + (["give"] if value > 3 else []) + (["times"] if value <= 300 else [])
        choices += ["share"] if divisors else []
        kind = rng.choice(choices)
        if kind == "buy":
            x = rng.randint(2, 40)
            events.append(f"Then {name} buys {x} more.")
            steps.append(f"After buying {x} more, {name} has {value} + {x} = {value + x} {thing}.")
            value += x
        elif kind == "give":
            x = rng.randint(2, value - 2)
            events.append(f"Then {name} gives {x} to a friend.")
            steps.append(f"After giving away {x}, {name} has {value} - {x} = {value - x} {thing}.")
            value -= x
        elif kind == "times":
            x = rng.randint(2, 4)
            events.append(f"Then {name}'s collection grows to {x} times its size.")
            steps.append(f"Growing {x} times, the collection has {value} * {x} = {value * x} {thing}.")
            value *= x
        else:
            x = rng.choice(divisors)
            events.append(f"Then {name} shares the {thing} equally among {x} boxes and keeps one box.")
            steps.append(f"Each of the {x} boxes holds {value} / {x} = {value // x} {thing}.")
            value //= x
    question = f"{name} has {start} {thing}. " + " ".join(events) + f" How many {thing} does {name} have now?"
    return _finish(question, steps, value)


def shopping(rng: random.Random, n_steps: int) -> Problem:
    """A bill of ``n_steps - 1`` kinds of items (one step each) and the change from a note (the last step)."""
    name = rng.choice(NAMES)
    items = rng.sample(["notebooks", "pens", "apples", "mugs", "candles", "socks", "plants"], n_steps - 1)
    bought = [(item, rng.randint(2, 9), rng.randint(2, 15)) for item in items]
    costs = [count * price for _, count, price in bought]
    total = sum(costs)
    note = next(n for n in (20, 50, 100, 200, 500, 1000) if n > total)
    steps = [f"The {item} cost {count} * {price} = {count * price} dollars." for item, count, price in bought]
    if len(costs) > 1:
        summed = " + ".join(map(str, costs))
        steps.append(f"The bill is {summed} = {total} dollars, so the change is {note} - {total} = {note - total} dollars.")
    else:
        steps.append(f"The change is {note} - {total} = {note - total} dollars.")
    listed = ", ".join(f"{count} {item} at {price} dollars each" for item, count, price in bought)
    question = f"{name} buys {listed} and pays with a {note} dollar note. How much change, in dollars, does {name} get?"
    return _finish(question, steps, note - total)


def trip(rng: random.Random, n_steps: int) -> Problem:
    """A trip of ``n_steps - 1`` legs, two at least (one step each, distance = speed * hours) and the total distance."""
    name = rng.choice(NAMES)
    legs = [(rng.randint(6, 18) * 5, rng.randint(2, 5)) for _ in range(n_steps - 1)]
    distances = [speed * hours for speed, hours in legs]
    steps = [
        f"The {ORDINALS[i]} leg covers {speed} * {hours} = {speed * hours} km."
        for i, (speed, hours) in enumerate(legs)
    ]
    steps.append(f"The whole trip is {' + '.join(map(str, distances))} = {sum(distances)} km.")
    told = ", then ".join(f"{hours} hours at {speed} km per hour" for speed, hours in legs)
    question = f"{name} drives {told}. How many km does {name} drive in all?"
    return _finish(question, steps, sum(distances))


def ages(rng: random.Random, n_steps: int) -> Problem:
    """``n_steps - 1`` people whose ages follow from the previous person's (one step each), then the sum."""
    people = rng.sample(NAMES, n_steps)
    age = rng.randint(8, 40)
    known, steps, known_ages = [f"{people[0]} is {age} years old."], [], [age]
    for before, person in zip(people, people[1:]):
        choices = ["older"] + (["younger"] if age > 7 else []) + (["twice"] if age <= 45 else [])
        choices += ["half"] if age % 2 == 0 and age >= 8 else []
        kind = rng.choice(choices)
        if kind == "older":
            x = rng.randint(2, 15)
            known.append(f"{person} is {x} years older than {before}.")
            steps.append(f"{person} is {age} + {x} = {age + x} years old.")
            age += x
        elif kind == "younger":
            x = rng.randint(2, age - 5)
            known.append(f"{person} is {x} years younger than {before}.")
            steps.append(f"{person} is {age} - {x} = {age - x} years old.")
            age -= x
        elif kind == "twice":
            known.append(f"{person} is twice as old as {before}.")
            steps.append(f"{person} is {age} * 2 = {age * 2} years old.")
            age *= 2
        else:
            known.append(f"{person} is half as old as {before}.")
            steps.append(f"{person} is {age} / 2 = {age // 2} years old.")
            age //= 2
        known_ages.append(age)
    steps.append(f"Together they are {' + '.join(map(str, known_ages))} = {sum(known_ages)} years old.")
    question = " ".join(known) + " What is the sum of their ages?"
    return _finish(question, steps, sum(known_ages))


# Each template with the step counts it can write; together they cover MIN_STEPS..MAX_STEPS.
TEMPLATES: dict[str, tuple[Callable[[random.Random, int], Problem], int, int]] = {
    "collection": (collection, 2, 6),
    "shopping": (shopping, 2, 6),
    "trip": (trip, 3, 6),
    "ages": (ages, 2, 6),
}


def synthetic_problem(rng: random.Random, max_steps: int = MAX_STEPS) -> Problem:
    """One problem: a template that can write ``max_steps`` or fewer, then a step count within its range
    (capped at ``max_steps``), chosen uniformly. With the default cap every template takes part."""
    names = [name for name in sorted(TEMPLATES) if TEMPLATES[name][1] <= max_steps]
    make, low, high = TEMPLATES[rng.choice(names)]
    return make(rng, rng.randint(low, min(high, max_steps)))


def n_test_rows(n_train: int) -> int:
    """The test split's size: a tenth of the training rows, at least one."""
    return max(1, n_train // 10)


def paired_test_path(output: str | Path) -> Path:
    """Where the test split goes: ``data/synth.jsonl`` -> ``data/synth_test.jsonl``."""
    output = Path(output)
    return output.with_name(f"{output.stem}_test{output.suffix or '.jsonl'}")


def synthetic_splits(n_train: int, seed: int, max_steps: int = MAX_STEPS) -> tuple[list[Problem], list[Problem]]:
    """``n_train`` training problems and :func:`n_test_rows` test problems, no question in both.

    One stream of problems from ``random.Random(seed)``, repeated questions skipped: the first
    ``n_train`` distinct ones are the training split, the next ones the test split. ``max_steps``
    (2 to 6) sets the difficulty: fewer steps, fewer chances to slip.
    """
    if not MIN_STEPS <= max_steps <= MAX_STEPS:
        raise UsageError(f"max_steps must be in {MIN_STEPS}..{MAX_STEPS}, got {max_steps}")
    rng = random.Random(seed)
    wanted = n_train + n_test_rows(n_train)
    seen: set[str] = set()
    problems: list[Problem] = []
    while len(problems) < wanted:
        problem = synthetic_problem(rng, max_steps)
        if problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
    return problems[:n_train], problems[n_train:]
