"""A stand-in for a capable model: it reads the request it is given and answers well, plus one lie.

With sources in the prompt (``[n] ...`` blocks), it paraphrases the passage that best matches
the question and cites it; for "who knows X" it lists the excerpts that mention X, one line
per candidate. With tools (the shop), it calls them natively: it resolves "the first one",
"it", "the black one", "both" and product names against the products the conversation's
tool results showed, and asks back when a reference is ambiguous. After tools, it summarises
the results. Every answer also carries one planted sentence with an invented number or name
(one of ``PLANTED``), so the bench can count how often the server shows it.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import AsyncIterator
from typing import Any

from bench._scoring import content_words
from parley.providers.base import (
    ChatMessage,
    Delta,
    Finish,
    Provider,
    ProviderRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
)

#: Invented facts, each with a distinctive number or name the sources never contain.
PLANTED = [
    "This has worked the same way since version 4.7, released in March 2011.",
    "More than 38,000 teams at Initech rely on it every day.",
    "Support engineer Jordan Pike confirmed this in 2019.",
    # Claims without a number or a name: only the share of their words in a source tells them.
    "It also works offline on a smartwatch without any setup.",
    "You can undo this later from the billing page of your account.",
    "This is only available to customers on the enterprise plan.",
]
PLANTED_PERSON = "Jordan Pike"
ORDINALS = {"first": 0, "second": 1, "third": 2, "fourth": 3, "fifth": 4, "last": -1}
COLOURS = ("black", "white", "blue", "red", "green", "grey", "graphite", "silver", "navy", "pink", "beige")
SOURCE_BLOCK = re.compile(r"^\[(\d+)\]\s*(.*?)(?=^\[\d+\]|\n\n(?:Question:|Answer )|\Z)", re.S | re.M)


def planted(key: str) -> str:
    return PLANTED[zlib.crc32(key.encode()) % len(PLANTED)]


def products_in(output: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """A tool output's product list (search, recommendations) and single product (details, add)."""
    if not isinstance(output, dict):
        return [], None
    listed = output.get("products") or ([] if "product" in output else output.get("recommendations")) or []
    single = output.get("product") if isinstance(output.get("product"), dict) else None
    item = output.get("cart_item")
    if single is None and isinstance(item, dict) and "product_id" in item:
        single = {
            "id": item["product_id"],
            "name": item.get("product_name", item["product_id"]),
            "added": True,
        }
    return [p for p in listed if isinstance(p, dict) and "id" in p], single


class CapableProvider(Provider):
    chooses_tools = True

    def __init__(self) -> None:
        self.name = "bench:capable"
        self.model = "capable"

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Delta]:
        if request.tools and request.tool_choice != "none":
            steps = self.shop(request)
        else:
            steps = [TextDelta(self.answer(request))]
        produced = 0
        for step in steps:
            if isinstance(step, TextDelta):
                for word in re.findall(r"\S+\s*", step.text):  # streamed like a model, word by word
                    produced += 1
                    yield TextDelta(word)
            else:
                yield step
        yield Usage(sum(self.count_tokens(m.content) for m in request.messages), produced)
        yield Finish("tool_calls" if any(isinstance(s, ToolCallDelta) for s in steps) else "stop")

    # -- grounded answers -------------------------------------------------------------------

    def answer(self, request: ProviderRequest) -> str:
        if request.tools:  # tool_choice "none": the step limit; summarise what the tools gave
            return self.summary(request.messages) or "I could not finish that; could you rephrase it?"
        prompt = "\n\n".join(m.content for m in request.messages if m.role in ("system", "user"))
        user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        question = m.group(1).strip() if (m := re.search(r"^Question:\s*(.+)$", user, re.M)) else user
        sources = {int(n): body.strip() for n, body in SOURCE_BLOCK.findall(prompt)}
        if "Results of the tools" in user:
            return self.tools_summary(user.split("Results of the tools", 1)[1], question)
        if not sources:
            return "I don't know: nothing I was given covers that."
        if re.match(r"\s*(who|which candidates?)\b", question, re.I):
            return self.people(question, sources)
        wanted = set(content_words(question))
        best = max(sources, key=lambda n: (len(wanted & set(content_words(sources[n]))), -n))
        if not wanted & set(content_words(sources[best])):
            return "I don't know: the sources do not answer that."
        body = sources[best].split("\nA:", 1)[-1] if "\nA:" in sources[best] else sources[best]
        parts = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(body.split())) if s][:2]
        text = " ".join(parts)[:400].rstrip()
        return f"{text} [{best}] {planted(question)} [{best}]"

    def people(self, question: str, sources: dict[int, str]) -> str:
        wanted = content_words(question)
        lines = []
        for n, text in sources.items():
            low = text.lower()
            if wanted and all(w in low for w in wanted):
                name = re.search(r"[A-Z][a-zà-ÿ]+(?: [A-Z][a-zà-ÿ]+)+", text)
                sentence = next(
                    (s for s in re.split(r"(?<=[.!?])\s+|\n", text) if wanted[0] in s.lower()), ""
                )
                lines.append(
                    f"- {name.group(0) if name else f'Candidate {n}'}: {sentence.strip()[:160]} [{n}]"
                )
        if not lines:
            return "I don't know: none of the CV excerpts mentions that."
        first = min(sources)
        return "\n".join(
            [*lines, f"- {PLANTED_PERSON}: eight years of {' '.join(wanted)} at Globex [{first}]"]
        )

    # -- the shop ---------------------------------------------------------------------------

    def shop(self, request: ProviderRequest) -> list[Delta]:
        messages = request.messages
        last_user = max(i for i, m in enumerate(messages) if m.role == "user")
        text = messages[last_user].content
        now = [m for m in messages[last_user + 1 :] if m.role == "tool"]
        listed, focus = self.shown(messages[:last_user])
        calls = [c for m in messages[last_user + 1 :] for c in m.tool_calls]
        low = text.lower()
        if now:  # tools ran in this turn: another step, or the reply
            for m in now:
                more, single = products_in(_json(m.content))
                if more and not single:
                    listed = more
            if re.search(r"\b(add|put|buy)\b", low) and not any(c.name == "add_to_cart" for c in calls):
                named = self.named(low, listed)
                if named:
                    return [self.call("add_to_cart", {"product_id": named["id"], "quantity": 1})]
            return [TextDelta(self.summary(messages) or "Done.")]
        targets: list[dict[str, Any]] | None = None
        if re.search(r"\b(add|put|buy)\b", low):
            targets = self.resolve(low, listed, focus)
            if targets is None:
                return [TextDelta("Which one do you mean? Please tell me its name or its place in the list.")]
            if not targets:
                query = re.sub(r"\b(add|put|buy|to|my|cart|the|in|please|a|an)\b", " ", low)
                return [self.call("search_products", {"query": " ".join(query.split())})]
            return [
                self.call("add_to_cart", {"product_id": p["id"], "quantity": 1}, index=i)
                for i, p in enumerate(targets)
            ]
        if re.search(r"\b(more|details?|about|tell|describe)\b", low) and (listed or focus):
            targets = self.resolve(low, listed, focus)
            if not targets:
                return [TextDelta("Which one do you mean? Please tell me its name or its place in the list.")]
            return [self.call("show_product_details", {"product_id": targets[0]["id"]})]
        query = re.sub(r"\b(show|me|find|i'm|i am|looking|for|some|any|search|please)\b", " ", low)
        return [self.call("search_products", {"query": " ".join(query.split()).strip(" ?.!")})]

    @staticmethod
    def call(name: str, arguments: dict[str, Any], index: int = 0) -> ToolCallDelta:
        return ToolCallDelta(
            index=index, id=f"call_{name}_{index}", name=name, arguments=json.dumps(arguments)
        )

    @staticmethod
    def shown(messages: list[ChatMessage]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The last list of products shown, and the product in focus (the last one shown alone)."""
        listed: list[dict[str, Any]] = []
        focus = None
        for m in messages:
            if m.role != "tool":
                continue
            more, single = products_in(_json(m.content))
            if single is not None:
                focus = single
            elif more:
                listed, focus = more, (more[0] if len(more) == 1 else None)
        return listed, focus

    def resolve(
        self, low: str, listed: list[dict[str, Any]], focus: dict[str, Any] | None
    ) -> list[dict[str, Any]] | None:
        """The products a reference names; [] when it names none shown (search), None when ambiguous."""
        for word, i in ORDINALS.items():
            if re.search(rf"\b{word}\b", low) and listed and -len(listed) <= i < len(listed):
                return [listed[i]]
        if re.search(r"\bboth\b", low):
            return listed[:2] if len(listed) == 2 else None
        for colour in COLOURS:
            if re.search(rf"\b{colour}\b", low):
                hits = [p for p in listed if colour in p["name"].lower()]
                return hits if len(hits) == 1 else None
        named = self.named(low, listed)
        if named:
            return [named]
        if re.search(r"\b(it|that|this|that one|this one)\b", low):
            return [focus] if focus else None
        return []

    @staticmethod
    def named(low: str, listed: list[dict[str, Any]]) -> dict[str, Any] | None:
        def score(p: dict[str, Any]) -> float:
            words = set(re.findall(r"[a-z0-9]+", p["name"].lower()))
            return len(words & set(re.findall(r"[a-z0-9]+", low))) / max(1, len(words))

        best = max(listed, key=score, default=None)
        return best if best is not None and score(best) >= 0.75 else None

    def summary(self, messages: list[ChatMessage]) -> str:
        last_user = max(i for i, m in enumerate(messages) if m.role == "user")
        outputs = [_json(m.content) for m in messages[last_user + 1 :] if m.role == "tool"]
        return self.tools_summary_of(outputs, messages[last_user].content)

    def tools_summary(self, rendered: str, question: str) -> str:
        return f"Here is what I found: {' '.join(rendered.split())[:300]} {planted(question)}"

    def tools_summary_of(self, outputs: list[Any], key: str) -> str:
        parts = []
        for output in outputs:
            listed, single = products_in(output)
            if isinstance(output, dict) and "error" in output:
                parts.append(f"That did not work: {output['error']}")
            elif single and single.get("added"):
                parts.append(f"I added {single.get('name', single['id'])} to your cart.")
            elif single:
                price = f" for ${single['price']}" if "price" in single else ""
                parts.append(f"{single.get('name', single['id'])} is available{price}.")
            elif listed:
                names = "; ".join(f"{i}. {p.get('name', p['id'])}" for i, p in enumerate(listed[:5], start=1))
                parts.append(f"I found {len(listed)} products: {names}.")
        return " ".join([*parts, planted(key)]) if parts else ""


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
