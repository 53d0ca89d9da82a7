"""Arithmetic, worked out by the server: a small model asked "what is 12 times 7?" answered
"… = 90 days … 72 total days". A message that only asks for a calculation gets its
result, computed (``simpleeval``: numbers and the four operations, powers and percentages;
nothing else evaluates).
"""

from __future__ import annotations

import math
import re

from simpleeval import NumberTooHigh, SimpleEval  # type: ignore[import-untyped]

#: The question around a calculation ("what's …?", "how much is …", "calculate …").
_ASKING = re.compile(
    r"^\s*(?:(?:please|hey|ok|so)[\s,]+)?"
    r"(?:what(?:['\u2019]s|\s+is|\s+are)|how\s+much\s+is|how\s+much\s+are|calculate|compute|work\s+out|solve|tell\s+me)?"
    r"\s*(?P<expression>.*?)[\s?!.=]*$",
    re.IGNORECASE,
)
#: Words for operators, in the order they are replaced.
_WORDS = (
    (re.compile(r"(\d(?:[\d.]*\d)?)\s*%\s*of\b", re.I), r"(\1/100)*"),  # "15% of 80"
    (re.compile(r"(\d(?:[\d.]*\d)?)\s+percent\s+of\b", re.I), r"(\1/100)*"),
    (re.compile(r"\bmultiplied\s+by\b|\btimes\b|\u00d7|(?<=\d)\s*x\s*(?=\d)", re.I), "*"),
    (re.compile(r"\bdivided\s+by\b|÷", re.I), "/"),
    (re.compile(r"\bplus\b|\badded\s+to\b", re.I), "+"),
    (re.compile(r"\bminus\b|\u2212", re.I), "-"),
    (re.compile(r"\bto\s+the\s+power\s+of\b|\^", re.I), "**"),
    (re.compile(r"\bsquared\b", re.I), "**2"),
    (re.compile(r"\bcubed\b", re.I), "**3"),
)
#: What is left once the words are operators: numbers, operators, brackets, spaces.
_EXPRESSION = re.compile(r"[\d.\s+\-*/()]+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_OPERATOR = re.compile(r"\*\*|[+\-*/]")
#: Results beyond this many digits are shown rounded; beyond ``MAX_DIGITS`` not at all.
SIGNIFICANT = 12
MAX_DIGITS = 30


def calculation(text: str) -> str | None:
    """The reply to a message that only asks for arithmetic ("what is 12 times 7?": its
    expression and result, 84), else ``None``: anything with a word that is not a number or an operator
    ("12 times a day", "what is 7 up?") is not arithmetic."""
    if len(text) > 200:
        return None
    found = _ASKING.match(text.strip())
    asked = found["expression"] if found else ""
    expression = asked
    for pattern, operator in _WORDS:
        expression = pattern.sub(operator, expression)
    expression = expression.replace(",", "") if re.search(r"\d,\d{3}\b", expression) else expression
    if not _EXPRESSION.fullmatch(expression) or len(_NUMBER.findall(expression)) < 2:
        return None
    if not _OPERATOR.search(re.sub(r"^\s*-", "", expression)):
        return None
    shown = _shown(expression)
    if re.search(r"%|\bpercent\b", asked, re.I):  # "15% of 80", not "(15 / 100) * 80"
        shown = re.sub(r"\s*(?:%|\bpercent\b)", "%", " ".join(asked.split()), flags=re.I)
    try:
        value = SimpleEval(functions={}, names={}).eval(expression.strip())
    except ZeroDivisionError:
        return f"{shown} has no answer: a number cannot be divided by zero."
    except (SyntaxError, NumberTooHigh, OverflowError, ValueError):
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    result = _number(value)
    return None if result is None else f"{shown} = {result}"


def _shown(expression: str) -> str:
    """The expression as people write it: with the multiplication, division and minus signs
    of print, and powers with a caret ("2^10")."""
    out = re.sub(r"\s*\*\*\s*", "^", expression.strip())
    out = re.sub(r"\s*\*\s*", " \u00d7 ", out)
    out = re.sub(r"\s*/\s*", " ÷ ", out)
    out = re.sub(r"\s*\+\s*", " + ", out)
    out = re.sub(r"(?<=[\d)])\s*-\s*", " \u2212 ", out)
    return re.sub(r"\s+", " ", out)


def _number(value: float) -> str | None:
    """A result as a person reads it: 84, 0.5, 1,024, 3.333333333333 (rounded to
    ``SIGNIFICANT`` digits); ``None`` when it is not a finite number of sensible size."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if abs(value) >= 10**MAX_DIGITS:
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 10**SIGNIFICANT:
        value = int(value)
    if isinstance(value, int):
        return f"{value:,}"
    text = f"{value:,.{SIGNIFICANT}g}"
    return text if "e" in text else text.rstrip("0").rstrip(".") if "." in text else text
