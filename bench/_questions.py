"""The answer bench's question sets, hand-written against Parley's own demo data.

Demo FAQ questions are paraphrased as a user would ask (not the entry's wording); each has
the facts (strings) a right answer must contain and the FAQ entry that holds them. Items
alternate between the ``calibrate`` and ``report`` splits (even index / odd index).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FaqQuestion:
    text: str
    facts: tuple[str, ...]
    entry: str  # the gold FAQ entry's question (its chunk title)


def q(text: str, facts: tuple[str, ...] | str, entry: str) -> FaqQuestion:
    return FaqQuestion(text, (facts,) if isinstance(facts, str) else facts, entry)


PORT = "Which port does Parley listen on, and how do I change it?"
REQS = "What are the system requirements?"
INSTALL = "How do I install and start Parley?"
DATA = "Where does Parley keep its data?"

DEMO_FAQ = [
    q("what port does parley use out of the box?", "8000", PORT),
    q("how much RAM does the default model need", "1 GB", REQS),
    q("Which Python version do I need to run it?", "3.11", REQS),
    q("how do I get parley running on my laptop", "make run", INSTALL),
    q("where can I read the API docs once it's started?", "/docs", "Where is Parley's API documentation?"),
    q("in which folder are my chats saved by default?", ".parley", DATA),
    q("how can I move the data folder somewhere else", "PARLEY_DATA_DIR", DATA),
    q(
        "how do I apply database migrations manually",
        "parley db upgrade",
        "How do I upgrade the database after updating Parley?",
    ),
    q("what model answers out of the box?", "SmolLM2", "Which language model does Parley use by default?"),
    q("can I plug in gpt-4o-mini instead?", "PARLEY_MODEL", "Can I use OpenAI, Anthropic or Gemini models?"),
    q(
        "I serve my models with Ollama, will that work?",
        "OpenAI-compatible",
        "Can I use Ollama or a llama.cpp server?",
    ),
    q(
        "what does parley do when the model API goes down mid-answer?",
        "fails over",
        "What happens when a model provider fails?",
    ),
    q(
        "is there a way to try it without downloading any model?",
        "scripted:echo",
        "What is the scripted provider?",
    ),
    q("what states can a run end in?", ("cancelled", "interrupted"), "What is a run?"),
    q(
        "which endpoint do I read the streamed tokens from?",
        "/v1/runs/{id}/events",
        "How do I stream a reply?",
    ),
    q(
        "my wifi dropped halfway through a reply, is it gone?",
        "Last-Event-ID",
        "My connection dropped in the middle of a reply. Do I lose the answer?",
    ),
    q(
        "how do I stop an answer that takes forever",
        "/cancel",
        "How do I cancel a run that is taking too long?",
    ),
    q(
        "my client retries POSTs, how do I avoid starting two runs?",
        "Idempotency-Key",
        "What happens if I send the same request twice?",
    ),
    q(
        "what if I post a new message before the assistant finished?",
        "409",
        "What happens if I send a message while the assistant is still answering?",
    ),
    q(
        "if the server crashes what happens to a half-streamed answer",
        "interrupted",
        "What happens to a run if the server crashes?",
    ),
    q("how do I remove a conversation", "DELETE /v1/threads/{id}", "How do I delete a conversation?"),
    q(
        "how can I load my own documents",
        "parley ingest",
        "How do I add my own documents to a knowledge base?",
    ),
    q("can it read PDF files?", "PDF", "Which file formats can a knowledge base ingest?"),
    q(
        "must I restart parley after I change a document?",
        "next search",
        "Do I need to restart the server after changing documents?",
    ),
    q("which embedding model powers the search", "all-MiniLM-L6-v2", "How does knowledge base search work?"),
    q(
        "what are the little [1] markers in answers",
        "citations",
        "What do the numbers like [1] in an answer mean?",
    ),
    q("what assistants are built in?", ("recruiter", "shop"), "Which assistants come with Parley?"),
    q("how do I define a custom assistant", "PARLEY_CONFIG_FILE", "How do I create my own assistant?"),
    q(
        "can I talk to parley with the openai python library?",
        "/v1/chat/completions",
        "Can an assistant use the OpenAI SDK?",
    ),
    q("is there a health check endpoint?", "/healthz", "How do I check that Parley is healthy?"),
    q("can other users read my threads?", "404", "Can other people see my conversations?"),
    q("what licence is parley released under", "Apache 2.0", "What does Parley cost?"),
    q(
        "how do I run several parley processes",
        ("PostgreSQL", "Redis"),
        "How can I run Parley with several processes?",
    ),
    q("how do I listen on all interfaces?", "0.0.0.0", PORT),
    # Entries added to the FAQ in sessions 17-18 (questions written by a separate writer, before any run).
    q("what is this parley thing, in a nutshell?", "self-hosted", "What is Parley?"),
    q("which programming language is parley written in", "Python", "What is Parley?"),
    q(
        "can I use parley from a browser instead of curl?",
        "http://127.0.0.1:8000/",
        "Does Parley have a web interface?",
    ),
    q("where can I look at graphs of my experiments", "/dashboard", "Does Parley have a web interface?"),
    q(
        "will it work on a box with no network access?",
        "on your machine",
        "Does Parley need an internet connection?",
    ),
    q(
        "do my prompts get sent off to some cloud service?",
        "hosted provider",
        "Does Parley need an internet connection?",
    ),
    q(
        "how do I upgrade parley to the latest release",
        "git pull",
        "How do I update Parley to a new version?",
    ),
    q(
        "a newer parley just came out, what steps do I follow to switch my install over?",
        ("git pull", "make run"),
        "How do I update Parley to a new version?",
    ),
    q("replies take ages to show up, why is that?", "CPU", "Why are the answers slow?"),
    q(
        "can I make the default model use more of my cpu cores?",
        "PARLEY_LOCAL_THREADS",
        "Why are the answers slow?",
    ),
    q(
        "the default chat bot keeps inventing things, why is it so unreliable?",
        "135 million",
        "Why does the general assistant get facts wrong?",
    ),
    q(
        "how can I get more accurate answers out of the general-purpose bot",
        "larger model",
        "Why does the general assistant get facts wrong?",
    ),
    q(
        "if I tell it my name, will it still know it when I start a new chat?",
        "across conversations",
        "Does Parley remember what I told it?",
    ),
    q(
        "I don't want it storing personal stuff about me, how do I switch that off",
        "PARLEY_MEMORY=false",
        "Does Parley remember what I told it?",
    ),
    q(
        "why does the bot just tell me it has no idea instead of answering?",
        "relevant enough",
        "Why did the assistant say it does not know?",
    ),
    q(
        "what can I do when the knowledge base assistant won't answer my question",
        "rephrasing",
        "Why did the assistant say it does not know?",
    ),
    q("where does parley write its log output?", "standard error", "Where are Parley's logs?"),
    q("how do I get more verbose logging", "PARLEY_LOG_LEVEL", "Where are Parley's logs?"),
    q("how do I generate a token for my client app?", "parley keys create", "How do I create an API key?"),
    q(
        "how should a client pass its credentials in each request",
        "Authorization: Bearer",
        "How do I create an API key?",
    ),
    q(
        "how many requests per minute does one key get by default?",
        "120/minute",
        "Can I limit how much each user can use?",
    ),
    q(
        "can I cap how many tokens someone burns through each day",
        "PARLEY_DAILY_TOKEN_BUDGET",
        "Can I limit how much each user can use?",
    ),
    q(
        "how do I find out how much each person on my team is spending?",
        "/v1/usage",
        "Where can I see the usage and cost of each user?",
    ),
    q(
        "where do I see how many tokens a single answer used",
        "run.completed",
        "Where can I see the usage and cost of each user?",
    ),
    q(
        "I want my parley server reachable from outside, what should I set up first?",
        ("HTTPS", "API keys"),
        "Is it safe to expose Parley on the internet?",
    ),
    q(
        "parley won't start when I bind it to a public address, why?",
        "without authentication",
        "Is it safe to expose Parley on the internet?",
    ),
    q(
        "I'd love to suggest a new feature, where do I send it?",
        "Open an issue",
        "Where do I report a bug or ask for a feature?",
    ),
    q(
        "something broke, what info do you need from me to look into it",
        ("/openapi.json", "request id"),
        "Where do I report a bug or ask for a feature?",
    ),
]

#: Questions the demo FAQ does not answer: the support assistant should decline each.
DEMO_UNANSWERABLE = [
    "Can I pay for Parley with PayPal?",
    "Does Parley have an iPhone app?",
    "What is the capital of Peru?",
    "Can Parley generate images from a prompt?",
    "How many employees does the company behind Parley have?",
    "What is your customer support phone number?",
    "Can I fine-tune the model on my own data?",
    "Who won the football world cup in 2018?",
    "Is there a discount for students?",
    "How do I change the colour theme of the web page?",
    "Does Parley integrate with Slack?",
    "What is a good recipe for banana bread?",
    "How do I translate the interface into Japanese?",
    "When is the next major release planned?",
    "Do you offer an SLA with 99.99% uptime?",
    "Is there a voice mode to talk to the assistant?",
]


@dataclass(frozen=True)
class CvQuestion:
    text: str
    keyword: str  # gold: the demo CVs whose text contains it (word-bounded, case-insensitive)


DEMO_CVS = [
    CvQuestion("Who knows Python?", "Python"),
    CvQuestion("Who has worked with Kubernetes?", "Kubernetes"),
    CvQuestion("Which candidates know AWS?", "AWS"),
    CvQuestion("Who has experience with Figma?", "Figma"),
    CvQuestion("Who has done audits?", "audit"),
    CvQuestion("Who has worked as a nurse?", "nurse"),
    CvQuestion("Who speaks French?", "French"),
    CvQuestion("Who speaks German?", "German"),
    CvQuestion("Who knows SolidWorks?", "SolidWorks"),
    CvQuestion("Who has used Salesforce?", "Salesforce"),
    CvQuestion("Who has SEO experience?", "SEO"),
    CvQuestion("Who has worked as a teacher?", "teacher"),
    CvQuestion("Who knows Terraform?", "Terraform"),
    CvQuestion("Who has experience with PyTorch?", "PyTorch"),
    CvQuestion("Who knows Redis?", "Redis"),
    CvQuestion("Who has used SAP?", "SAP"),
]

#: Nobody in the demo CVs has these: the recruiter should decline and name no one.
CV_UNANSWERABLE = [
    "Who knows COBOL?",
    "Who has worked as an airline pilot?",
    "Who speaks Japanese?",
    "Who has experience with Haskell?",
    "Who is a licensed electrician?",
    "Who has worked as a veterinarian?",
]

#: How a user would name a resumes/labels.csv category.
CATEGORY_WORDS = {
    "BPO": "business process outsourcing (BPO)",
    "HR": "human resources (HR)",
    "INFORMATION-TECHNOLOGY": "information technology",
    "PUBLIC-RELATIONS": "public relations",
    "DIGITAL-MEDIA": "digital media",
    "BUSINESS-DEVELOPMENT": "business development",
}


@dataclass(frozen=True)
class Turn:
    """One user turn of a shop dialogue; ``ref`` says what it refers to (None: a search).

    ``ref``: ``("ordinal", i)``, ``("it",)``, ``("colour", word)``, ``("both", family)``,
    ``("name", product name)``. ``action``: ``search``, ``details`` or ``add``.
    """

    text: str
    action: str
    ref: tuple[str, ...] = field(default=())


DIALOGUES: list[list[Turn]] = [
    [
        Turn("show me wireless headphones", "search"),
        Turn("tell me more about the first one", "details", ("ordinal", "0")),
        Turn("add it to my cart", "add", ("it",)),
    ],
    [
        Turn("I'm looking for bluetooth speakers", "search"),
        Turn("add the black one to my cart", "add", ("colour", "black")),
    ],
    [
        Turn("show me mechanical keyboards", "search"),
        Turn("what about the second one? tell me more", "details", ("ordinal", "1")),
        Turn("ok, add it to my cart", "add", ("it",)),
    ],
    [
        Turn("find running shoes", "search"),
        Turn("add it to my cart", "add", ("it",)),
    ],
    [
        Turn("show me the Trail Watch Pro", "search"),
        Turn("add both to my cart", "add", ("both", "Trail Watch Pro")),
    ],
    [
        Turn(
            "add the Glide Wireless Mouse, Black to my cart", "add", ("name", "Glide Wireless Mouse, Black")
        ),
    ],
    [
        Turn("show me monitors", "search"),
        Turn("tell me about the third one", "details", ("ordinal", "2")),
        Turn("put it in my cart please", "add", ("it",)),
    ],
    [
        Turn("show me wireless earbuds", "search"),
        Turn("add the white one", "add", ("colour", "white")),
    ],
    [
        Turn("I need a rain jacket", "search"),
        Turn("add the last one to my cart", "add", ("ordinal", "-1")),
    ],
    [
        Turn("show me the Pulse Fit Band", "search"),
        Turn("add both please", "add", ("both", "Pulse Fit Band")),
    ],
]


@dataclass(frozen=True)
class FollowUp:
    """A question asked after another in the same conversation ("how do I move it?")."""

    before: str
    text: str
    facts: tuple[str, ...]
    entry: str


def f(before: str, text: str, facts: tuple[str, ...] | str, entry: str) -> FollowUp:
    return FollowUp(before, text, (facts,) if isinstance(facts, str) else facts, entry)


#: Follow-up questions on the demo FAQ, written before follow-ups were handled; the last two
#: change the subject with an "it" that means Parley. Alternate items: calibrate / report.
FOLLOW_UPS = [
    f("where does parley store my data?", "how do I move it?", "PARLEY_DATA_DIR", DATA),
    f("what port does parley use?", "can I change it?", "PARLEY_PORT", PORT),
    f(
        "which model does parley use by default?",
        "how do I switch it to another one?",
        "PARLEY_MODEL",
        "Which language model does Parley use by default?",
    ),
    f(
        "how do I create an API key?",
        "and how do I revoke it?",
        "parley keys revoke",
        "How do I create an API key?",
    ),
    f("what is a run?", "how do I stop it?", "/cancel", "How do I cancel a run that is taking too long?"),
    f(
        "how do I add my own documents?",
        "which formats does that accept?",
        "PDF",
        "Which file formats can a knowledge base ingest?",
    ),
    f(
        "how do I stream a reply?",
        "what if my connection drops during it?",
        "Last-Event-ID",
        "My connection dropped in the middle of a reply. Do I lose the answer?",
    ),
    f(
        "does parley remember what I tell it?",
        "how do I make it forget?",
        "DELETE /v1/memory",
        "Does Parley remember what I told it?",
    ),
    f(
        "can I use ollama?",
        "what happens if it goes down?",
        "fails over",
        "What happens when a model provider fails?",
    ),
    f(
        "how do I create my own assistant?",
        "do I need to restart after that?",
        "restart",
        "How do I create my own assistant?",
    ),
    f(
        "can I limit how much each user can use?",
        "what happens when someone goes over it?",
        "429",
        "Can I limit how much each user can use?",
    ),
    f(
        "how do I delete a conversation?",
        "what happens to its runs?",
        "cancelled",
        "How do I delete a conversation?",
    ),
    f(
        "is it safe to put parley on the internet?",
        "how do I do that safely?",
        "HTTPS",
        "Is it safe to expose Parley on the internet?",
    ),
    f(
        "how can I run several parley processes?",
        "do I need redis for that?",
        "optional",
        "How can I run Parley with several processes?",
    ),
    f(
        "what is the scripted provider?",
        "how do I use it?",
        "scripted:echo",
        "What is the scripted provider?",
    ),
    f(
        "how do I upgrade the database?",
        "can I run it by hand?",
        "parley db upgrade",
        "How do I upgrade the database after updating Parley?",
    ),
    f("what port does parley use?", "is it open source?", "Apache 2.0", "What does Parley cost?"),
    f(
        "where does parley keep its data?",
        "does it work offline?",
        "on your machine",
        "Does Parley need an internet connection?",
    ),
]
