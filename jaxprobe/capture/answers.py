"""Turning a generated answer into a class, or saying it cannot be done.

Models answer as asked ("B"), chatty ("The answer is B."), in words ("This is a benign lesion."), or reasoning
first (MedVLM-R1: ``<think>...</think><answer>B</answer>``). The parser strips reasoning, prefers an explicit
``<answer>`` block, then reads an option letter, then a class name; an answer it cannot map to exactly one class
(none named, several named, reasoning never finished) is *unparseable* and counted as such, never guessed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

UNPARSEABLE = -1
THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
UNFINISHED_THINK = re.compile(r"<think>.*\Z", re.S | re.I)
ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.S | re.I)
LETTER_PHRASES = (
    r"^\W*\(?(?P<letter>[A-Z])\)?\W*$",  # "B", "(B)", "B."
    r"^\W*\(?(?P<letter>[A-Z])[).:]",  # "B. benign", "(B) ...", "B: ..."
    r"\b(?i:answer|option|choice)\s*(?i:is|would be|:)?\s*(?i:option\s*)?\(?(?P<letter>[A-Z])\b\)?",
)


@dataclasses.dataclass(frozen=True)
class ParsedAnswer:
    prediction: int  # class index, or UNPARSEABLE
    how: str  # "letter", "class name", or why it is unparseable


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower().replace("_", " ")).split())


def strip_reasoning(text: str) -> str:
    """The answer part of a reply: ``<answer>`` content if present, else the text without ``<think>`` blocks."""
    tagged = ANSWER_TAG.search(text)
    if tagged:
        return tagged.group(1).strip()
    return UNFINISHED_THINK.sub("", THINK.sub("", text)).strip()


def _letter(text: str, letters: Sequence[str]) -> int | None:
    for pattern in LETTER_PHRASES:
        match = re.search(pattern, text, re.M)
        if match and match.group("letter").upper() in letters:
            return letters.index(match.group("letter").upper())
    return None


def _class_name(text: str, class_names: Sequence[str]) -> list[int]:
    """Classes named in ``text`` as whole words; a name inside a longer named class does not count twice."""
    padded = [f" {_normalise(name)} " for name in class_names]
    words = f" {_normalise(text)} "
    named = [k for k, name in enumerate(padded) if name in words]
    return [k for k in named if not any(k != j and padded[k] in padded[j] for j in named)]


def parse_answer(text: str, letters: Sequence[str], class_names: Sequence[str]) -> ParsedAnswer:
    """The class a reply chose (by option letter first, then by class name), or ``UNPARSEABLE`` with the reason."""
    if UNFINISHED_THINK.search(THINK.sub("", text)) and not ANSWER_TAG.search(text):
        return ParsedAnswer(UNPARSEABLE, "reasoning never finished")
    answer = strip_reasoning(text)
    if not answer:
        return ParsedAnswer(UNPARSEABLE, "empty answer")
    letter = _letter(answer, list(letters))
    if letter is not None:
        return ParsedAnswer(letter, "letter")
    named = _class_name(answer, class_names)
    if len(named) == 1:
        return ParsedAnswer(named[0], "class name")
    return ParsedAnswer(UNPARSEABLE, "several classes named" if named else "no option letter or class name")
