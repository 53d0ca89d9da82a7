"""Parsing and chunking: FAQ pairs, Markdown sections, plain text, PDF, and bad files."""

from __future__ import annotations

import itertools

import pytest

from parley.knowledge.chunking import entry_questions, is_faq, shown, split_faq, split_markdown, split_text
from parley.knowledge.ingest import UnreadableDocument, iter_files, parse
from tests.knowledge_data import FAQ, GUIDE, pdf_bytes


def test_faq_markdown_becomes_one_chunk_per_pair() -> None:
    doc = parse("help.md", FAQ.encode())
    assert doc.format == "faq"
    assert doc.title == "Acme help"
    assert [c.title for c in doc.chunks] == [
        "How do I reset my password?",
        "What is the refund policy?",
        "Which payment methods do you accept?",
    ]
    refund = doc.chunks[1].text
    assert refund.startswith("Q: What is the refund policy?\nA: Annual plans")
    assert "Monthly plans are not refunded." in refund  # a multi-line answer stays whole
    assert "Visa" not in refund


def test_faq_detection_needs_an_answer_after_the_question() -> None:
    assert is_faq("Q: one?\nA: yes")
    assert not is_faq("Q: a question with no answer\n\nSome prose.")
    assert split_faq("Q: no answer here\n") == []


def test_an_faq_entry_may_list_other_ways_to_ask_it() -> None:
    """Several ``Q:`` lines before an ``A:``: one entry, titled by the first; the others help the
    search find it and are never shown."""
    text = (
        "Q: How do I reset my password?\nQ: i forgot my login\nQ: locked out of my account\n"
        "A: Use the link on the sign-in page.\n\nQ: What is the refund policy?\nA: 30 days.\n"
    )
    first, second = split_faq(text)
    assert (first.title, second.title) == ("How do I reset my password?", "What is the refund policy?")
    assert entry_questions(first.text) == [
        "How do I reset my password?",
        "i forgot my login",
        "locked out of my account",
    ]
    assert shown(first.text) == "Q: How do I reset my password?\nA: Use the link on the sign-in page."
    assert entry_questions(second.text) == ["What is the refund policy?"]
    assert shown(second.text) == second.text
    assert entry_questions("Some prose.\nQ: not an entry") == []


def test_other_markdown_is_split_on_headings_with_their_path() -> None:
    doc = parse("guide.md", GUIDE.encode())
    assert doc.format == "markdown"
    assert [(c.title, c.text.split()[0]) for c in doc.chunks] == [
        ("Gardening guide > Tomatoes", "Tomatoes"),
        ("Gardening guide > Roses", "Prune"),
    ]


def test_headings_inside_code_fences_are_not_sections() -> None:
    chunks = split_markdown("# Top\n\n```\n# not a heading\n```\ntext\n")
    assert len(chunks) == 1
    assert "# not a heading" in chunks[0].text


def test_long_text_is_cut_into_overlapping_windows_of_bounded_size() -> None:
    sentences = [f"Sentence number {i} talks about topic {i}." for i in range(200)]
    text = " ".join(sentences)
    windows = split_text(text, size=300, overlap=80)
    assert len(windows) > 10
    assert all(len(w) <= 300 for w in windows)
    for before, after in itertools.pairwise(windows):
        last = before.split(". ")[-1]
        assert after.startswith(last) or last in after  # the cut sentence is repeated
    assert all(s in text for w in windows for s in w.split(". ")[:1])
    joined = " ".join(windows)
    assert all(s in joined for s in sentences)  # nothing is lost


def test_paragraphs_are_kept_together_when_they_fit() -> None:
    windows = split_text("First paragraph.\n\nSecond paragraph.", size=900)
    assert windows == ["First paragraph.\nSecond paragraph."]


def test_plain_text_and_pdf() -> None:
    text = parse("notes.txt", b"Just some notes.\n")
    assert (text.format, text.title, [c.text for c in text.chunks]) == ("text", "notes", ["Just some notes."])
    pdf = parse("cv.pdf", pdf_bytes("Alice knows Python and Kubernetes.", "Second page about gardening."))
    assert pdf.format == "pdf"
    assert pdf.title == "Test PDF"
    assert [c.title for c in pdf.chunks] == ["page 1", "page 2"]
    assert "Kubernetes" in pdf.chunks[0].text


def test_same_bytes_give_the_same_hashes() -> None:
    a, b = parse("help.md", FAQ.encode()), parse("help.md", FAQ.encode())
    assert a.sha256 == b.sha256
    assert [c.sha256 for c in a.chunks] == [c.sha256 for c in b.chunks]
    changed = parse("help.md", FAQ.replace("Visa", "Amex").encode())
    assert [x.sha256 == y.sha256 for x, y in zip(a.chunks, changed.chunks, strict=True)] == [
        True,
        True,
        False,
    ]


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("report.pdf", b"MZ\x90\x00 an executable", "not a PDF"),
        ("broken.pdf", b"%PDF-1.7\n garbage", "corrupt PDF"),
        ("notes.txt", b"\x00\x01\x02binary", "binary data"),
        ("latin.txt", "caf\xe9".encode("latin-1"), "not UTF-8"),
        ("empty.md", b"   \n", "no text"),
        ("sheet.xlsx", b"PK\x03\x04", "unsupported file type"),
    ],
)
def test_bad_files_are_refused_with_a_reason(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(UnreadableDocument, match=reason):
        parse(name, data)


def test_a_pdf_renamed_to_txt_is_still_read_as_pdf() -> None:
    assert parse("disguised.txt", pdf_bytes("Hidden PDF text.")).format == "pdf"


def test_iter_files_skips_hidden_files_and_names_sources_relative_to_the_root(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.md").write_text("# A")
    (tmp_path / "sub" / "b.txt").write_text("b")
    (tmp_path / ".hidden.md").write_text("h")
    assert [s for s, _ in iter_files(tmp_path)] == ["a.md", "sub/b.txt"]
    assert [s for s, _ in iter_files(tmp_path / "a.md")] == ["a.md"]
