"""The answer bench's judges (bench/_scoring.py) on made-up replies: each can fail."""

from __future__ import annotations

from bench import _scoring as score

FAQ_ENTRY = (
    "Q: What is the refund policy?\nA: Annual plans are refunded within 30 days of purchase. "
    "Set `PARLEY_DATA_DIR` to move the data."
)


def test_prompt_echoes_are_caught_and_a_sources_list_is_not() -> None:
    assert score.echoes("Sources:\n[1] Q: refunds\n\nQuestion: can I get a refund?")
    assert score.echoes(
        "Refunds within 30 days. Answer briefly, using only the sources above, and cite them."
    )
    assert score.echoes("Results of the tools the server ran:\n1. search_products")
    assert score.echoes("<|im_start|>assistant\nHello")
    assert score.echoes("Refunds take 30 days [1].\n\nSources: [1] What is the refund policy?") == []
    assert score.echoes("Ask any question about the sources you want.") == []


def test_json_in_a_reply_is_caught_and_prose_is_not() -> None:
    assert score.has_json('Here it is: {"products": [{"id": "AUD-101"}]}')
    assert score.has_json('"name": "Aurora ANC Wireless Headphones"')
    assert not score.has_json('I found the "Aurora ANC" headphones: $234.99, in stock.')
    assert not score.has_json("Use {curly} braces in templates: a: b.")
    # An FAQ answer quoting a request field in inline code is no dump; a fenced block still is.
    assert not score.has_json('Send `"multitask": "enqueue"` to queue it [1].')
    assert score.has_json('Results:\n```json\n{"id": "AUD-101"}\n```')
    assert score.has_json('The tools ran: "name": "Aurora" and `ok`.')


def test_refusals_are_recognised_only_when_the_reply_leads_with_one() -> None:
    assert score.declined("I don't know: I found nothing about that in my knowledge base.")
    assert score.declined("I couldn\u2019t find anything on PayPal in the FAQ.")
    assert score.declined("Sorry, I do not know.")
    assert not score.declined("Annual plans are refunded within 30 days [1].")
    assert not score.declined(
        "Refunds take 30 days [1]. Parley is free. Ask me if you don't know where to look."
    )


def test_a_sentence_with_an_invented_number_or_name_is_unsupported() -> None:
    reply = (
        "Annual plans are refunded within 30 days [1]. "
        "This has worked the same way since version 4.7, released in March 2011. [1] "
        "Support engineer Jordan Pike confirmed this. "
        "Set PARLEY_HOME to move the data."
    )
    bad = score.unsupported(reply, FAQ_ENTRY)
    assert [s[:20] for s in bad] == ["This has worked the ", "Support engineer Jor", "Set PARLEY_HOME to m"]
    assert score.unsupported("Annual plans get refunded within 30 days of the purchase [1].", FAQ_ENTRY) == []
    assert score.unsupported("Set `PARLEY_DATA_DIR` to move your data.", FAQ_ENTRY) == []
    # Content words alone: a sentence about something else entirely is unsupported too.
    assert score.unsupported("Monthly invoices are emailed to the billing contact.", FAQ_ENTRY)
    # A refusal or a question back claims nothing.
    assert score.unsupported("I don't know. Which plan do you mean?", FAQ_ENTRY) == []


def test_facts_key_spans_and_people() -> None:
    assert score.has_fact("Use `parley  db upgrade` by hand.", "parley db upgrade")
    assert not score.has_fact("Use parley upgrade by hand.", "parley db upgrade")
    span = score.key_span(["from here :", "Use ~~tildes around the words~~ to strike text through."])
    assert span[:3] == ["tildes", "around", "words"]
    assert score.covers("Wrap the words in tildes, around each side, to strike them through", span)
    assert not score.covers("Use the <del> tag.", span)
    known = ["Amelia Hartley", "Marcus Chen"]
    text = "- Amelia Hartley: Kubernetes at Northwind [1]\n- Jordan Pike: eight years of Kubernetes [1]"
    assert score.people_named(text, known) == {"Amelia Hartley"}
    assert score.invented_people(text, known, "Amelia Hartley works at Northwind Payments") == {"Jordan Pike"}


def test_a_capitalised_run_the_source_has_as_written_is_no_invented_person() -> None:
    # A CV line glued to a heading: every word is in the source, in that order.
    source = "Member of Women In Construction.\nSkills\nLinux, Go\nExperience\nSite Reliability Engineer"
    text = "- …Women In Construction, Linux, Go Experience Site Reliability Engineer [1]"
    assert score.invented_people(text, [], source) == set()
    assert score.unsupported(text, source) == []
    # Dropping the inner "In" must not hide a made-up one either.
    assert score.invented_people("- Women In Marketing [1]", [], source) == {"Women Marketing"}


def test_an_offer_of_other_entries_is_framing_not_the_answers_claim() -> None:
    reply = (
        'The closest entry I have is "Can other people see my conversations?": No. Every thread '
        "belongs to a user [1].\n\n"
        'Also close: "How do I delete a conversation?" [2] and "Where does Parley keep its data?" [3].'
    )
    assert score.cited(score.claims(reply)) == {1}  # the offered entries are not what it cites
    assert not score.has_fact(score.claims(reply), "Where does Parley keep its data")
    assert score.sentences(reply) == [
        'The closest entry I have is "Can other people see my conversations?": No.',
        "Every thread belongs to a user [1].",
    ]
    assert score.claims("Refunds take 30 days [1].") == "Refunds take 30 days [1]."
