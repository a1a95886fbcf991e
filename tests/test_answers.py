"""Answer parsing on the answer styles real models produce; what cannot be mapped is counted, never guessed."""

from __future__ import annotations

import pytest

from jaxprobe.capture.answers import UNPARSEABLE, parse_answer

CLASSES = ["normal", "benign", "malignant"]
LETTERS = ["A", "B", "C"]


@pytest.mark.parametrize(("text", "expected"), [
    ("B", 1), (" B\n", 1), ("(C)", 2), ("B.", 1), ("A. normal", 0), ("C: malignant tissue", 2),
    ("The answer is B.", 1), ("Answer: C", 2), ("the answer is (A)", 0), ("My choice is option B.", 1),
    ("benign", 1), ("This is a malignant lesion.", 2), ("Malignant.", 2), ("NORMAL", 0),
    ("<think>irregular margins, posterior shadowing</think><answer>C</answer>", 2),
    ("<think>could be A or B</think>\nB", 1),
    ("<think>hmm</think><answer>benign</answer>", 1),
    ("<answer> B </answer> because the margins are smooth", 1),
])
def test_real_answer_styles(text, expected):
    assert parse_answer(text, LETTERS, CLASSES).prediction == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"), ("I cannot tell from this image.", "no option letter"),
    ("It is either benign or malignant.", "several classes"),
    ("<think>the lesion looks irregular and", "never finished"),
    ("A benign-looking mass", "class name"),  # "A" is an article here: read the class name, not the letter
    ("D", "no option letter"),
])
def test_unparseable_or_not_letters(text, reason):
    parsed = parse_answer(text, LETTERS, CLASSES)
    if reason == "class name":
        assert parsed.prediction == 1 and parsed.how == "class name"
    else:
        assert parsed.prediction == UNPARSEABLE and reason in parsed.how


def test_class_names_inside_other_class_names_do_not_clash():
    covid = ["CT_COVID", "CT_NonCOVID"]
    assert parse_answer("ct noncovid", ["A", "B"], covid).prediction == 1
    assert parse_answer("CT COVID.", ["A", "B"], covid).prediction == 0
    grades = ["grade 1", "grade 10"]
    assert parse_answer("grade 10", ["A", "B"], grades).prediction == 1
