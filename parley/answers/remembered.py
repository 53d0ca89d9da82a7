"""What the user said about themselves, said back by the server when the model is small.

Given the user's remembered facts, SmolLM2-135M takes them for its own ("Hi, I'm Ana, the
friendly AI chatbot"); asked "what is my name?" without them, it invents one ("My name is
Parley"). For a model that cannot choose its tools, the facts stay out of the prompt
(``parley.context``), and a question about the user is answered here from what the user
stated: the remembered facts (``parley.memory``) and the conversation's own messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from parley.answers.check import sentences
from parley.answers.compose import spoken
from parley.facts import extract, said_back
from parley.facts import sentences as statement_sentences
from parley.knowledge.grounding import small_talk
from parley.memory import Stated, asked_for

#: Said when a small model's whole reply was about things the user never said (``guards``).
NOT_TOLD = "I don't know that about you: you haven't told me."
#: Words of a message that asks for something besides introducing its writer.
_ASKS = re.compile(
    r"\b(?:help|need|want|can\s+you|could\s+you|would\s+you|please|write|explain|tell|show|give|suggest"
    r"|recommend|how|what|why|where|when|which|who)\b",
    re.IGNORECASE,
)
#: A question: it starts as one or ends with a question mark.
_QUESTION = re.compile(
    r"^\W*(?:what|what['\u2019]s|whats|where|which|who|when|how|do|does|did|am|is|have|remind)\b|\?\s*$",
    re.IGNORECASE,
)
#: About the one asking.
_ABOUT_ME = re.compile(r"\b(?:my|me|i|i['\u2019]m|mine)\b", re.IGNORECASE)
#: Asks for something new rather than for what was said: "what's a good name for my dog?",
#: "what should I cook for dinner?", "tell me a joke about my dog".
_REQUEST = re.compile(
    r"\b(?:suggest|recommend|ideas?|good|best|should|could|would|can\s+you|joke|write|make|give\s+me)\b",
    re.IGNORECASE,
)
#: Asks for everything: "what do you know about me?", "do you remember me?", "who am I?".
_EVERYTHING = re.compile(
    r"\b(?:know|remember)\b.*\babout\s+me\b|\b(?:know|remember)\s+me\b|^\W*who\s+am\s+i\b",
    re.IGNORECASE,
)
#: Asks whether something holds of the user: "am I vegetarian?", "do I like jazz?".
_WHETHER = re.compile(r"^\W*(?:am\s+i|do\s+i|did\s+i|is\s+my|have\s+i)\b", re.IGNORECASE)
#: Asks for one thing of the user's by name: "what is my name?", "do you know my birthday?".
_MY_THING = re.compile(
    r"^\W*(?:what['\u2019]s|what\s+is|do\s+you\s+(?:know|remember))\s+my\s+"
    r"(?P<thing>[a-z]+(?:\s+[a-z]+)?)\W*$",
    re.IGNORECASE,
)


def about_me(question: str) -> bool:
    """Whether ``question`` asks something about the one asking (worth reading what they said)."""
    return bool(_QUESTION.search(question) and _ABOUT_ME.search(question) and not _REQUEST.search(question))


def recollection(question: str, facts: Sequence[Stated], *, remembering: bool) -> str | None:
    """The reply to a question about what the user stated, from ``facts``; ``None`` when the
    question asks for none of them (the model answers it). ``remembering``: facts from other
    conversations were read too (memory is on), as "you haven't told me" says."""
    if not about_me(question):
        return None
    everything = _EVERYTHING.search(question) is not None
    whether = _WHETHER.match(question) is not None
    wanted = list(facts) if everything else asked_for(facts, question, by_value=whether)
    if wanted:
        return told(wanted)
    where = "" if remembering else " in this conversation"
    if everything:
        return f"I don't know anything about you yet: you haven't told me{where}."
    if (mine := _MY_THING.match(question)) is not None:
        return f"I don't know your {mine.group('thing').lower()}: you haven't told me{where}."
    return None


def introduction(text: str, *, remembering: bool) -> str | None:
    """The reply to a message that only introduces the user ("Hi, I'm Sam and I live in
    Porto."): every sentence states facts about them or only greets, and nothing is asked.
    SmolLM2 answered it with "Hi there! I'm Sam, the friendly AI chatbot"."""
    if "?" in text or _ASKS.search(text):
        return None
    found = []
    for sentence in statement_sentences(text):
        facts = extract(sentence)
        if not facts and small_talk(sentence) != "greeting":
            return None
        found += facts
    if not found:
        return None
    name = next((f.value for f in found if f.kind == "name"), None)
    reply = f"Nice to meet you, {name}!" if name else "Thanks for telling me."
    rest = [said_back(f.text) for f in found if f.kind != "name"]
    if rest:
        reply += (" I'll remember that " if remembering else " Noted: ") + spoken(rest) + "."
    return reply


def statements(messages: Iterable[str]) -> str:
    """The sentences of the user's ``messages`` that say something: their questions left out."""
    return "\n".join(s for m in messages for s in sentences(m) if not s.rstrip().endswith("?"))


def told(facts: Sequence[Stated]) -> str:
    """The facts as the user hears them back: "You told me your name is Ana." or a list."""
    lines = [said_back(f.text) for f in facts]
    if len(lines) == 1:
        return f"You told me {lines[0]}."
    return "You told me:\n" + "\n".join(f"- {line}" for line in lines)
