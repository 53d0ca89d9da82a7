"""Answers people can trust: the server composes an answer from verified parts.

A model writes only what can be checked. Grounded answers come from the sources
(``compose``), a model's sentences are kept only when the sources support them
(``check``), replies after tools come from the tools' own summaries, references such as
"the first one" resolve against what was shown (``references``), attachments are read
as sources (``attachments``), and every model's output is guarded (``guards``).
"""
