"""NL-RX regular expressions: a parser, and whether two of them describe the same language.

NL-RX (Locascio et al. 2016) writes regexes in the syntax of dk.brics.automaton, the
automaton library its DFA-equivalence metric used; Python's ``re`` has no intersection
or complement. Operators, loosest first:

    a|b      union
    a&b      intersection
    ab       concatenation
    a* a+ a? a{n} a{n,} a{n,m}    repetition (postfix)
    ~a       complement: every string that ``a`` does not match (prefix, binds tightest,
             so ``~a*`` is ``(~a)*`` as in brics)

Atoms: a character; ``\\c`` the character ``c`` itself (so NL-RX's ``\\b`` is the letter b,
as brics reads it, not a word boundary); ``.`` any one character; ``[a-z0-9_]`` and
``[^...]`` classes; ``(...)``; ``()`` the empty string. A regex matches whole strings.
Where brics would read a misplaced operator (``*a``, ``a||b``) as a literal character,
this parser refuses the regex, as it does brics's rarely used ``#``, ``@``, ``"..."`` and
``<...>`` forms: an answer written that way counts as malformed.

The alphabet. Complement and ``.`` refer to every character, as in brics. Two characters
that belong to exactly the same explicit sets of the two regexes (their literals and
class contents) are interchangeable in both, so the languages are equal over all
characters iff they are equal over one representative per such block, plus one symbol
(``OTHER``) for every character no regex names. Equivalence is then decided over that
small alphabet by automata-lib (Thompson NFAs, subset construction for complements, and
Hopcroft-Karp on the fly for the equality check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from stepjepa.extras import require

if TYPE_CHECKING:
    from automata.fa.nfa import NFA

# Repetition counts above this are refused: NL-RX uses at most 7, and copying an automaton
# hundreds of times would let one degenerate model reply stall a whole evaluation.
MAX_REPEAT = 32
# Longer text is refused for the same reason (NL-RX's longest gold regex has 54 characters).
MAX_LENGTH = 300
# The symbol that stands for every character that neither regex names (never a single character).
OTHER = "<other>"
UNSUPPORTED = '#@"<'


class RegexSyntaxError(ValueError):
    """A regex that does not parse (or exceeds MAX_REPEAT / MAX_LENGTH); the message says where and why."""


@dataclass(frozen=True)
class Chars:
    """One character out of ``members``, or (negated) any character not in ``members``; ``.`` is Chars((), True)."""

    members: frozenset[str]
    negated: bool = False


@dataclass(frozen=True)
class Empty:
    """The empty string, ``()``."""


@dataclass(frozen=True)
class Alternation:
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Intersection:
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Concat:
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Repeat:
    """``node`` repeated ``low`` to ``high`` times (``high`` None: no upper bound)."""

    node: "Node"
    low: int
    high: int | None


@dataclass(frozen=True)
class Complement:
    node: "Node"


Node = Union[Chars, Empty, Alternation, Intersection, Concat, Repeat, Complement]


class _Parser:
    """Recursive descent over the grammar in the module docstring; one method per precedence level."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, why: str) -> RegexSyntaxError:
        return RegexSyntaxError(f"{why} at position {self.pos}")

    def peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def take(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def next_char(self, what: str) -> str:
        char = self.peek()
        if char is None:
            raise self.fail(f"regex ends inside {what}")
        self.pos += 1
        return char

    def parse(self) -> Node:
        node = self.union()
        if self.pos < len(self.text):
            raise self.fail(f"unexpected '{self.text[self.pos]}'")
        return node

    def union(self) -> Node:
        node = self.intersection()
        while self.take("|"):
            node = Alternation(node, self.intersection())
        return node

    def intersection(self) -> Node:
        node = self.concat()
        while self.take("&"):
            node = Intersection(node, self.concat())
        return node

    def concat(self) -> Node:
        node = self.repeat()
        while self.peek() not in (None, "|", "&", ")"):
            node = Concat(node, self.repeat())
        return node

    def repeat(self) -> Node:
        node = self.complement()
        while True:
            if self.take("*"):
                node = Repeat(node, 0, None)
            elif self.take("+"):
                node = Repeat(node, 1, None)
            elif self.take("?"):
                node = Repeat(node, 0, 1)
            elif self.take("{"):
                low, high = self.bounds()
                node = Repeat(node, low, high)
            else:
                return node

    def bounds(self) -> tuple[int, int | None]:
        """``n}``, ``n,}`` or ``n,m}`` after a ``{``."""
        low = self.number()
        high: int | None = low
        if self.take(","):
            high = None if self.peek() == "}" else self.number()
        if not self.take("}"):
            raise self.fail("expected '}'")
        if high is not None and high < low:
            raise self.fail(f"repetition {{{low},{high}}} has its bounds reversed")
        if max(low, high or 0) > MAX_REPEAT:
            raise self.fail(f"repetition count above {MAX_REPEAT}")
        return low, high

    def number(self) -> int:
        start = self.pos
        while (self.peek() or "").isdigit() and self.peek().isascii():
            self.pos += 1
        if self.pos == start:
            raise self.fail("expected a number")
        return int(self.text[start : self.pos])

    def complement(self) -> Node:
        if self.take("~"):
            return Complement(self.complement())
        return self.atom()

    def atom(self) -> Node:
        char = self.peek()
        if char is None:
            raise self.fail("regex ends where an expression is expected")
        if char in "|&)*+?{":
            raise self.fail(f"'{char}' where an expression is expected")
        if char in UNSUPPORTED:
            raise self.fail(f"unsupported brics syntax '{char}'")
        self.pos += 1
        if char == "(":
            if self.take(")"):
                return Empty()
            node = self.union()
            if not self.take(")"):
                raise self.fail("missing ')'")
            return node
        if char == ".":
            return Chars(frozenset(), negated=True)
        if char == "[":
            return self.char_class()
        if char == "\\":
            char = self.next_char("an escape")
        return Chars(frozenset(char))

    def char_class(self) -> Chars:
        """The rest of ``[...]`` or ``[^...]``: single characters, ``\\c`` escapes and ``a-z`` ranges."""
        negated = self.take("^")
        members: set[str] = set()
        if self.peek() == "]":
            raise self.fail("empty character class")
        while not self.take("]"):
            first = self.class_char()
            if self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                last = self.class_char()
                if ord(last) < ord(first):
                    raise self.fail(f"range {first}-{last} runs backwards")
                members.update(chr(code) for code in range(ord(first), ord(last) + 1))
            else:
                members.add(first)
        return Chars(frozenset(members), negated)

    def class_char(self) -> str:
        char = self.next_char("a character class")
        return self.next_char("a character class") if char == "\\" else char


def parse_regex(text: str) -> Node:
    """The syntax tree of an NL-RX regex; raises RegexSyntaxError naming the position and the problem."""
    if not isinstance(text, str):
        raise RegexSyntaxError(f"expected a string, got {type(text).__name__}")
    if not text:
        raise RegexSyntaxError("empty regex")
    if len(text) > MAX_LENGTH:
        raise RegexSyntaxError(f"longer than {MAX_LENGTH} characters")
    return _Parser(text).parse()


def _char_sets(node: Node) -> list[frozenset[str]]:
    """The explicit character set of every Chars leaf (literal, class contents; empty for ``.``)."""
    if isinstance(node, Chars):
        return [node.members]
    if isinstance(node, Empty):
        return []
    if isinstance(node, (Repeat, Complement)):
        return _char_sets(node.node)
    return _char_sets(node.left) + _char_sets(node.right)


class _Alphabet:
    """One symbol per block of characters that the given sets never tell apart, plus OTHER."""

    def __init__(self, sets: list[frozenset[str]]) -> None:
        unique = sorted(set(sets), key=sorted)
        blocks: dict[tuple[bool, ...], str] = {}
        self.symbol_of: dict[str, str] = {}
        for char in sorted(set().union(*unique)):
            signature = tuple(char in s for s in unique)
            self.symbol_of[char] = blocks.setdefault(signature, char)
        self.symbols = frozenset(blocks.values()) | {OTHER}

    def symbol(self, char: str) -> str:
        return self.symbol_of.get(char, OTHER)


def _nfa(node: Node, alphabet: _Alphabet) -> NFA:
    """A Thompson-style NFA of ``node`` over the alphabet's symbols."""
    from automata.fa.dfa import DFA
    from automata.fa.nfa import NFA

    symbols = alphabet.symbols
    if isinstance(node, Chars):
        named = {alphabet.symbol(c) for c in node.members}
        accepted = symbols - named if node.negated else named
        return NFA(states={0, 1}, input_symbols=symbols, transitions={0: {s: {1} for s in accepted}, 1: {}},
                   initial_state=0, final_states={1})
    if isinstance(node, Empty):
        return _empty_string(symbols)
    if isinstance(node, Complement):
        inner = DFA.from_nfa(_nfa(node.node, alphabet))
        return NFA.from_dfa(inner.complement())
    if isinstance(node, Repeat):
        inner = _nfa(node.node, alphabet)
        result = _empty_string(symbols)
        for _ in range(node.low):
            result = result.concatenate(inner)
        if node.high is None:
            return result.concatenate(inner.kleene_star())
        for _ in range(node.high - node.low):
            result = result.concatenate(inner.option())
        return result
    left, right = _nfa(node.left, alphabet), _nfa(node.right, alphabet)
    if isinstance(node, Alternation):
        return left.union(right)
    if isinstance(node, Intersection):
        return left.intersection(right)
    return left.concatenate(right)


def _empty_string(symbols: frozenset[str]) -> NFA:
    from automata.fa.nfa import NFA

    return NFA(states={0}, input_symbols=symbols, transitions={0: {}}, initial_state=0, final_states={0})


def regex_equivalent(a: str, b: str) -> bool:
    """Whether regexes ``a`` and ``b`` match exactly the same strings (over all characters).

    Raises RegexSyntaxError (a ValueError) if either does not parse.
    """
    trees = parse_regex(a), parse_regex(b)
    if trees[0] == trees[1]:
        return True
    require("automata", "regex equivalence (evaluate --task regex)")
    alphabet = _Alphabet(_char_sets(trees[0]) + _char_sets(trees[1]))
    return _nfa(trees[0], alphabet) == _nfa(trees[1], alphabet)


def regex_fullmatch(regex: str, text: str) -> bool:
    """Whether ``regex`` matches the whole of ``text``; raises RegexSyntaxError if it does not parse."""
    tree = parse_regex(regex)
    alphabet = _Alphabet(_char_sets(tree))
    return _nfa(tree, alphabet).accepts_input([alphabet.symbol(c) for c in text])
