"""Follow-up questions in a knowledge assistant's conversation.

"how do I move it?", asked after "where does parley store my data?", says nothing a search can
find: its "it" is the earlier question's subject. A question that refers back ("it", "them",
"she", "that one") or continues ("and for PostgreSQL?") with few words of its own is searched
for, and answered, together with the user's question it follows (``in_context``), unless it is
clearly an entry's own question by itself (``parley.agent.prepare``). A question that changes
the subject with an "it" that means the product ("is it open source?", after a question on the
port) is still taken for a follow-up: measured in ``bench.answers --only followups``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from parley.tools.choice import content_stems

#: Words that point back at what was asked before.
_REFERS = re.compile(
    r"\b(?:it|its|them|they|those|these|he|she|him|his|her|that one|this one)\b|\b(?:that|this)\s*[?.!]*\s*$",
    re.I,
)
#: Openings that continue the question before: "and for PostgreSQL?", "what about Redis?".
_CONTINUES = re.compile(r"^\W*(?:and|also|what about|how about)\b", re.I)
#: A follow-up has at most this many content words of its own.
OWN_WORDS = 3
#: Earlier questions joined at most ("and how do I revoke it?" after "can I list them?" after …).
DEPTH = 2


def follows_up(text: str) -> bool:
    """Whether ``text`` refers back to the question before it, with few words of its own."""
    if not (_REFERS.search(text) or _CONTINUES.match(text)):
        return False
    return len(set(content_stems(text))) <= OWN_WORDS


def in_context(text: str, earlier: Sequence[str]) -> str:
    """``text`` with the user's earlier questions it follows up (``earlier``: their messages
    before it, oldest first), or ``text`` itself when it follows up nothing."""
    if not earlier or not follows_up(text):
        return text
    joined = [text]
    for before in reversed(earlier):
        joined.insert(0, before.strip())
        if len(joined) > DEPTH or not follows_up(before):
            break
    return " ".join(joined)
