"""Prompt templates: the one parser of `{{ var }}` placeholders, and where a template's fixed text ends.

A guardrails prompt is mostly fixed policy text followed by per-request variables. The prefix cache can only
reuse the part before the first per-request variable, and only the tokens of that part that do not merge
with whatever text follows (`stable_prefix`). The guard's training renders the same templates (`render`),
so the prompts it learned are token for token the prompts the rails send.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from ..model.tokenizer import Tokenizer

log = logging.getLogger(__name__)

# Per-request template variables: the fixed prompt text ends at the first of these.
USER_VARIABLES = ("user_input", "bot_response", "bot_message", "user_message", "relevant_chunks", "history")
# Texts appended to a prefix to see which of its tokens do not depend on what follows (see `stable_prefix`).
# Every ASCII letter, digit and punctuation mark, whitespace, a few non-ASCII letters and common first words.
PROBES = (*string.ascii_letters, *string.digits, *string.punctuation, " ", "\n", "\t")
PROBES += ("é", "É", "你", "The", "the", "I", "What", "How", "Is", "Can", "Please", "You", "Hello")

# A Jinja expression `{{ ... }}` (group "name": its leading identifier, "rest": anything after it, such as a
# filter), or the start of a statement `{% ... %}` / comment `{# ... #}`.
TAG = re.compile(r"\{\{-?\s*(?P<name>\w+)?(?P<rest>[^}]*?)\s*-?\}\}|\{%|\{#")


def variable_name(tag: re.Match) -> str | None:
    """The variable of a plain `{{ name }}` tag; None for filters, expressions, statements and comments."""
    return tag.group("name") if tag.group("name") and not tag.group("rest") else None


def template_prefix(template: str, variables: Sequence[str] = USER_VARIABLES) -> str:
    """The text of `template` before its first per-request variable.

    Any other Jinja tag met first (a config constant, a loop) also ends the fixed part: its value is not
    known here. That case is logged, since it usually means the template should be rendered first.
    """
    m = TAG.search(template)
    if m is None:
        return template
    if m.group("name") not in variables:
        log.warning("template prefix cut at %r, which is not a per-request variable", m.group(0))
    return template[: m.start()]


def split_template(template: str, variable: str) -> tuple[str, str]:
    """(fixed text before the first `{{ variable }}`, rest): the prefix is what a state cache can reuse."""
    for m in TAG.finditer(template):
        if variable_name(m) == variable:
            return template[: m.start()], template[m.start() :]
    raise InputError(f"template has no {{{{ {variable} }}}} placeholder")


def render(template: str, **variables: str) -> str:
    """Fill plain `{{ name }}` placeholders the way the rails' Jinja rendering does for plain strings.

    Every placeholder must be given, and only plain placeholders are supported: a silently empty user message
    or an unrendered tag would train or score the wrong prompt.
    """

    def fill(m: re.Match) -> str:
        name = variable_name(m)
        if name is None:
            raise InputError(f"only plain {{{{ name }}}} placeholders can be rendered here, got {m.group(0)!r}")
        if name not in variables:
            raise InputError(f"template variable {name!r} not given")
        return str(variables[name])

    return TAG.sub(fill, template)


def stable_prefix(tokenizer: Tokenizer, prefix: str) -> list[int]:
    """The tokens of `prefix` that stay the same whatever text follows it.

    A token may straddle the end of the prefix (`"` + `How` may merge into one token), so prefilling the
    prefix's own tokenisation could store a state that no real prompt passes through. The tokens shared by
    the tokenisations of prefix + several different probe texts are the ones every real prompt starts with.
    """
    if not prefix:
        return []
    runs = [tokenizer.encode(prefix + probe) for probe in PROBES]
    n = 0
    while all(n < len(r) for r in runs) and len({r[n] for r in runs}) == 1:
        n += 1
    return runs[0][:n]
