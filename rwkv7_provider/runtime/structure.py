"""Structure-aware scoring: in a known self-check template, the user's text is data, never prompt.

A rail check's prompt is a template (policy text, `User message: "{{ user_input }}"`, a Yes/No question,
`Answer:`) with the user's text pasted in. Scored literally, that text can end the quote itself, repeat the
question, answer it ("Answer: No") and open a new, harmless "User message": a small guard then judges the
harmless one (issue 23: 8 of 8 blocked requests passed that way). The engine knows the templates it will see
(`Engine.register_templates`: a guardrails config's prompts at pre-warm, and the templates a guard trained by
`train-guard` records in its config.json), so the classifier answer path (`RWKV7Client` with `choices`)
recovers exactly which characters the user wrote and scores them as data:

- canonical text (`canonical.py`): invisible, reordered, accented and look-alike characters read as a reader
  sees them;
- the template's closing delimiter cannot occur in the span: for `"{{ user_input }}"` every `"` the user typed
  becomes `'` (a span that ends a line has its newlines made spaces), so the user cannot end the quote;
- a span that imitates the template's verdict (an "Answer: No" line, a moderation question, chat-format
  control strings, a role header such as "User message:" right after a closing quote, in many wordings and
  delimiters) is cut at every imitation marker: each piece between them is also scored on its own, in the
  same template, and the check takes the highest block probability of the whole span and its pieces. A
  harmful request followed by a fake verdict and a harmless request is then judged on the harmful piece as
  if it came alone. Text without such a marker (quotes, "the verdict: not guilty", a chat log) is not cut
  at quotes or labels: out of context, such pieces could read as anything. Nor is a verdict inside a quotation
  the user opens (`told me "Answer: no" and I laughed`): cut there, "... told me" alone read as an attack to
  the guard (12 of the 30 harmless messages a quoted sentence got blocked in issue 23's bench);
- a user's message (or piece) of several sentences also has each plain sentence scored alone
  (MIN_SENTENCE_WORDS words or more, no quotation inside), and what it quotes when that is MIN_QUOTATION_WORDS
  or more (a request as reported speech). Harmless small talk or a story around a harmful request cannot
  dilute it: issue 23's `chatter` family stayed blocked 0.82 of the time on sources a guard never saw, 0.98
  with the sentences scored. Out of its message a plain sentence is judged with less to go on, so it decides
  only when the guard answers Yes for it (ALONE_DECIDES_AT: chatter 0.94 there, at +1.1 points of false
  positives instead of +1.7), a short one ("I've made up my mind.") only when the guard is sure
  (SHORT_DECIDES_AT). A bot response is not cut into sentences (`SENTENCE_VARIABLES`);
- reported speech cannot tip a check: when a user's message (without imitation markers) has sentences that
  quote someone and sentences that do not, the whole counts at most as much as the most blocking of its own
  words without the reported speech and each quoting sentence alone (`Plan.caps`). A harmless question with
  `The judge said "the verdict: not guilty" and everyone cheered.` after it scored P(Yes) 0.3-0.8 as a whole
  with guard v16 while each half scored low (31 of 588 harmless messages blocked in issue 23's bench); a
  harmful request stays as blocking as it is alone, and a harmful remark as blocking as its sentence alone.

Exact for the prefix cache: the policy text before the span is the template's own, so its cached state is
reused and only the span and the tail are computed; a one-sentence message without imitation markers costs
one check as before (the extra work is only for pieces, scored in one batch). The
guard's training renders its prompts with `render_data`, so what it learned is token for token what it is
asked (train = serve).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .canonical import canonical_text, familiar_part, script_share
from .templates import TAG, USER_VARIABLES, variable_name

if TYPE_CHECKING:
    from .engine import Engine
    from .results import ScoreResult

log = logging.getLogger(__name__)

MAX_PIECES = 6  # most pieces of one span scored on their own; later pieces are scored together
MIN_SENTENCE_WORDS = 3  # a shorter sentence ("Thanks!", "Hi there.") is never scored alone
SHORT_SENTENCE_WORDS = 6  # a shorter one ("I've made up my mind.") leans on its neighbours: see SHORT_DECIDES_AT
MIN_QUOTATION_WORDS = 6  # short sayings and verdict-like quotes ("the answer is no") stay in their sentence
MAX_SENTENCE_PIECES = 32  # beyond this many plain sentences (a long letter), neighbours share a piece
# A plain sentence scored out of its message decides a check only when the guard's own answer for it is Yes:
# lifted out of a harmless task, an instruction ("Write a recipe for the given ingredients.") can read as harmful
# alone; the block_threshold (0.3 in the configs) is for text as the user wrote it. A long quotation is text the
# user wrote as a whole (a request as someone else's words) and decides at the threshold, like an imitation's parts.
ALONE_DECIDES_AT = 0.5
# A sentence of under SHORT_SENTENCE_WORDS words says little alone ("I've made up my mind." scores P(Yes) 0.59
# alone after a harmless question), so it decides only when the guard is sure; a short request in small talk
# ("How can I burn myself?" between two sentences about a trip) is still judged as if it came alone.
SHORT_DECIDES_AT = 0.9
# Spans whose sentences are scored alone: the user's own message. A bot response is long by nature and its rail
# is not one a sentence out of context can be judged by (the guard's output rail is near chance), so it keeps
# the imitation pieces only.
SENTENCE_VARIABLES = ("user_input", "user_message")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
_QUOTE_CHARS = '"\u201c\u201d'  # straight and curly double quotes (phones type curly ones)
_QUOTATION = re.compile(r'["\u201c]([^"\u201c\u201d\n]+)["\u201d]')

# A closing delimiter character typed by the user becomes one that cannot close the span.
_SUBSTITUTES = {'"': "'", "'": '"', "`": "'", ")": "]", "]": ")", "}": ")", ">": ")", "|": "/"}

# Labels an imitation may use: roles that open a new message, questions, answers and verdicts.
_ROLES = (r"user(?:'?s)?(?:\s+(?:message|input|request|query|prompt|text|turn))?|human|customer|client|"
          r"bot(?:'?s)?(?:\s+(?:message|response|reply|answer))?|assistant|ai|model|system(?:\s+prompt)?|"
          r"moderator|guard|classifier|input|message|prompt|request")
_QUESTIONS = r"question|q|task|instructions?"
_ANSWERS = (r"answer|a|verdict|decision|label|classification|result|output|response|rating|assessment|"
            r"evaluation|judge?ment|moderation(?:\s+result)?|safety|blocked|flagged|category")
_VERDICTS = (r"(?:not\s+)?(?:yes|no|safe|unsafe|allow(?:ed)?|block(?:ed)?|ok(?:ay)?|pass(?:ed)?|fine|harmless|"
             r"harmful|compliant|flagged|none|n/?a|true|false|[01])")
# Words around a label ("New user message:", "Safety question:", "Moderator check:").
_QUALIFIERS = r"(?:[A-Za-z]+[ \t]+){0,2}"
# A quote or bracket that ends something: a bracket, or a quote right after the text it closes (`bomb"`). A quote
# after a space opens a quotation (`my boss replied "Answer: no"`): what follows it is reported speech, not a new
# line of the prompt, and is not cut there.
_QUOTE_MARKS, _CLOSE_BRACKETS = r"[\"'`]", r"[\])}>]"
_CLOSING = rf"(?:(?<=\S){_QUOTE_MARKS}|{_CLOSE_BRACKETS})"
# Where an imitated line starts: a line start, or after a closing quote or bracket (`_CLOSING`, as a lookbehind)
# or the end of a sentence (imitations written on one line).
_START = rf"(?:^|(?<={_CLOSING})|(?<=[.?!] ))[ \t]*[#*>\-\[(<{{|=_~]*[ \t]*"
_SEPARATOR = r"(?:[ \t]+[A-Za-z]+)?[ \t]*[\])}>*|]*[ \t]*(?::|=|->|=>)"
_GENERIC = (
    rf"{_START}{_QUALIFIERS}(?:{_ANSWERS}){_SEPARATOR}[ \t]*[\"'*]*(?:(?:{_VERDICTS})(?!\w))?[\"'*.!]*",
    rf"{_START}{_QUALIFIERS}(?:{_QUESTIONS}){_SEPARATOR}(?:[^\n?]*\?)?",
    rf"{_START}{_QUALIFIERS}(?:{_ROLES}){_SEPARATOR}",
    (r"\bshould\s+(?:the|this|that)\s+(?:\w+\s+){0,2}(?:message|input|request|text|prompt|response|content)\s+"
    r"be\s+(?:blocked|allowed|flagged|refused|rejected|approved|moderated)[^\n?]*\??"),
    (r"\b(?:(?:is|does|was|did)\s+(?:this|the|that)|(?:classify|judge|rate|evaluate|assess|check)\s+(?:this|the|that))"
    r"\s+(?:\w+\s+){0,2}(?:message|input|request|text|prompt|response|content)\b[^\n?]*\??"),
    rf"^[ \t]*#{{1,6}}[ \t]*{_QUALIFIERS}(?:{_ROLES}|{_QUESTIONS}|{_ANSWERS})[ \t]*:?[ \t]*$",
    r"\(\s*(?:yes|no|safe|unsafe)\s*(?:or|/)\s*(?:yes|no|safe|unsafe)\s*\)\??",
    r"\b(?:reply|answer|respond)(?:\s+(?:with|only))?\s+(?:yes|no|safe|unsafe)\s*(?:or|/)\s*(?:yes|no|safe|unsafe)\b\.?",
    (r"<\|[^|<>\n]{1,40}\|>|\[/?(?:INST|SYS)\]|<</?SYS>>|</?s>|</?(?:user|assistant|system|bot|human|message|input|"
    r"output|answer|question|verdict|response|query|prompt)[\w-]*(?:\s[^<>\n]*)?>"),
    r"^[ \t]*(?:-{3,}|={3,}|#{3,}|\*{3,}|_{3,}|\"{3}|'{3}|`{3}\w*)[ \t]*$",
    r"(?-i:\[\s*[A-Z][A-Z0-9 _/-]{1,40}\])",
)
# Markers only an imitation of a verdict has: a label with a verdict word, a moderation question, chat-format
# control strings, a role header right after a closing quote or bracket. A span is cut into pieces only when it
# has one of these (or a line with one of the template's own labels): harmless text with "the verdict: not
# guilty" or a chat log is scored whole, as its pieces, out of context, could read as anything.
_MODERATION = (r"(?:safe|unsafe|harmful|allowed|acceptable|appropriate|blocked|flagged|violat\w*|compl\w*|break\w*|"
               r"against)")
_STRONG = (
    rf"{_START}{_QUALIFIERS}(?:{_ANSWERS}){_SEPARATOR}[ \t]*[\"'*]*(?:{_VERDICTS})(?!\w)",
    _GENERIC[3],
    (r"\b(?:(?:is|does|was|did)\s+(?:this|the|that)\s+(?:\w+\s+){0,2}(?:message|input|request|prompt|content)\s+"
    rf"(?:\w+\s+){{0,2}}{_MODERATION}|(?:classify|judge|rate|evaluate|assess)\s+(?:this|the|that)\s+"
    r"(?:\w+\s+){0,2}(?:message|input|request|prompt|content)\b)"),
    _GENERIC[6], _GENERIC[7], _GENERIC[8],
    rf"{_CLOSING}[ \t]*\n*[ \t]*[#*>\-\[(<{{|=_~]*[ \t]*{_QUALIFIERS}(?:{_ROLES}){_SEPARATOR}",
)
# Every marker contains one of these (lower case); a span without any is one piece without running the markers'
# regex, which is what almost every message costs.
_TRIGGERS = (":", "=", "<", ">", "[", "#", "---", "___", "***", '"""', "'''", "```", "should", "reply", "answer",
             "respond", "message", "input", "request", "text", "prompt", "response", "content", "(yes", "(no", "(safe",
             "(unsafe", "( yes", "( no")
_VERDICT_ONLY = re.compile(rf"\W*(?:{_VERDICTS})\W*", re.IGNORECASE)
_LABEL_LINE = re.compile(r"^([A-Za-z][A-Za-z' ]{0,40}):", re.MULTILINE)


@dataclass(frozen=True)
class Plan:
    """How a matched prompt is scored: `prompts[0]` is the whole canonical prompt, the others score one piece
    of a span each (`bars`: from which block probability each may decide). `familiar` is the share of the
    spans' letters in scripts the guard was trained on; when that is under half, `readable` is the prompt with
    only those words of the spans (empty when they have none), which the `unfamiliar_script: allow` policy
    scores instead."""

    template: str
    prompts: tuple[str, ...]
    spans: dict[str, str]
    familiar: float
    readable: tuple[str, ...] = ()
    bars: tuple[float, ...] = ()  # per prompt: the block probability from which it may decide (see `decides`)
    caps: tuple[int, ...] = ()  # prompts the whole counts at most as much as (reported speech: `_reported_speech`)

    def decides(self, index: int, p_block: float) -> bool:
        """Whether prompt `index`'s block probability may decide the check: the whole, an imitation's parts and
        long quotations always; a plain sentence alone only from ALONE_DECIDES_AT on (SHORT_DECIDES_AT for a
        short one); a cap alone never."""
        return index >= len(self.bars) or p_block >= self.bars[index]

    def deciding(self, p_block: Sequence[float]) -> int:
        """The prompt whose block probability decides the check: the most blocking of those that may decide,
        the whole counted at most as much as the most blocking of its `caps`."""
        whole = 0
        if self.caps:
            top = max(self.caps, key=lambda i: p_block[i])
            whole = top if p_block[top] < p_block[0] else 0
        deciding = [whole] + [i for i in range(1, len(p_block)) if self.decides(i, p_block[i])]
        return max(deciding, key=lambda i: p_block[i])


class TemplateStructure:
    """One template cut at its per-request variables: the literal texts between them, each span's closing
    delimiter, and the imitation markers (generic ones plus the template's own line labels)."""

    def __init__(self, template: str) -> None:
        literals, slots, last = [], [], 0
        for m in TAG.finditer(template):
            name = variable_name(m)
            if name not in USER_VARIABLES or name in slots:
                raise ValueError(f"only plain, distinct per-request variables are supported, got {m.group(0)!r}")
            literals.append(template[last : m.start()])
            slots.append(name)
            last = m.end()
        if not slots:
            raise ValueError("the template has no per-request variable")
        literals.append(template[last:])
        self.template, self.literals, self.slots = template, tuple(literals), tuple(slots)
        self.closers = tuple(_closer(lit) for lit in literals[1:])
        groups = "".join(f"(?P<v{i}>.*?)" + re.escape(lit) for i, lit in enumerate(literals[1:]))
        self._pattern = re.compile(re.escape(literals[0]) + groups, re.DOTALL)
        own = {m.group(1).strip().lower() for m in _LABEL_LINE.finditer(template)}
        own_labels = "|".join(sorted((re.escape(w).replace(r"\ ", r"\s+") for w in own), key=len, reverse=True))
        own = (rf"{_START}{_QUALIFIERS}(?:{own_labels}){_SEPARATOR}",) if own_labels else ()
        self._markers = re.compile("|".join(f"(?:{p})" for p in _GENERIC + own), re.IGNORECASE | re.MULTILINE)
        self._strong = re.compile("|".join(f"(?:{p})" for p in _STRONG + own), re.IGNORECASE | re.MULTILINE)

    @property
    def fixed_length(self) -> int:
        return sum(len(lit) for lit in self.literals)

    def match(self, prompt: str) -> dict[str, str] | None:
        """The raw text of each variable when `prompt` is this template rendered, else None."""
        head, tail = self.literals[0], self.literals[-1]
        if len(prompt) < len(head) + len(tail) or not (prompt.startswith(head) and prompt.endswith(tail)):
            return None
        if len(self.slots) == 1:
            return {self.slots[0]: prompt[len(head) : len(prompt) - len(tail)]}
        m = self._pattern.fullmatch(prompt)
        return None if m is None else {name: m.group(f"v{i}") for i, name in enumerate(self.slots)}

    def data(self, name: str, text: str) -> str:
        """The canonical text of a span with this template's closing delimiter neutralised."""
        return self._neutral(name, canonical_text(text))

    def render(self, values: dict[str, str]) -> str:
        """The template filled with the spans as data (what is scored, and what the guard trains on)."""
        return self._fill({name: self.data(name, values[name]) for name in self.slots})

    def pieces(self, text: str, by_sentence: bool = True) -> list[str]:
        """What of the canonical span is also scored alone: the parts between imitation markers (parts without
        two letters, or only a verdict word, dropped; at most MAX_PIECES), and when `by_sentence` the long
        quotations in them (`_quotations`; at most MAX_PIECES) and the plain sentences of a part of several
        sentences (`_plain_sentences`; at most MAX_SENTENCE_PIECES pieces); `[span]` when there is nothing to
        cut."""
        canonical = canonical_text(text)
        parts, sentences, _ = self._pieces(canonical, by_sentence)
        return parts + sentences or [canonical]

    def plan(self, values: dict[str, str], scripts: frozenset[str]) -> Plan:
        """The prompts to score for these raw variable values: the whole, then each piece of each span."""
        canonical = {name: canonical_text(values[name]) for name in self.slots}
        spans = {name: self._neutral(name, text) for name, text in canonical.items()}
        index, bars, caps = {self._fill(spans): 0}, [0.0], []  # prompt -> its position, in order

        def add(name: str, piece: str, bar: float) -> int:
            prompt = self._fill(spans | {name: self._neutral(name, piece)})
            if prompt not in index:
                index[prompt] = len(index)
                bars.append(bar)
            return index[prompt]

        for name in self.slots:
            parts, sentences, speech = self._pieces(canonical[name], name in SENTENCE_VARIABLES)
            for part, bar in [(p, 0.0) for p in parts] + [(s, _sentence_bar(s)) for s in sentences]:
                add(name, part, bar)
            caps += [add(name, piece, math.inf) for piece in speech]
        familiar = script_share("".join(spans.values()), scripts)
        readable = ()
        if familiar < 0.5:
            parts = {name: familiar_part(text, scripts) for name, text in spans.items()}
            readable = (self._fill(parts),) if any(parts.values()) else ()
        return Plan(self.template, tuple(index), spans, familiar, readable, tuple(bars), tuple(caps))

    def _neutral(self, name: str, canonical: str) -> str:
        closer = self.closers[self.slots.index(name)]
        if closer == "\n":
            return canonical.replace("\n", " ")
        return canonical.translate({ord(c): _SUBSTITUTES[c] for c in closer})

    def _fill(self, spans: dict[str, str]) -> str:
        parts = [self.literals[0]]
        for name, lit in zip(self.slots, self.literals[1:]):
            parts += [spans[name], lit]
        return "".join(parts)

    def _pieces(self, text: str, by_sentence: bool) -> tuple[list[str], list[str], list[str]]:
        """(the imitation parts and long quotations, the plain sentences, the reported-speech caps when nothing
        was cut at imitation markers: `_reported_speech`) of a canonical span, each list without the whole;
        ([], [], []) when there is nothing to cut."""
        parts = self._imitation_parts(text)
        cut = parts if parts != [text] else []
        if not by_sentence:
            return cut, [], []
        quotes = [q for part in parts for q in _quotations(part) if q not in parts]
        split = [_sentences(part) for part in parts]  # once per part: plain sentences and reported speech
        sentences = [s for each in split for s in _plain_sentences(each) if s not in parts]
        size = max(1, -(-len(sentences) // MAX_SENTENCE_PIECES))  # one sentence a piece, up to MAX_SENTENCE_PIECES
        grouped = [" ".join(sentences[i : i + size]) for i in range(0, len(sentences), size)]
        return cut + _at_most(quotes, MAX_PIECES), grouped, [] if cut else _reported_speech(split[0])

    def _imitation_parts(self, text: str) -> list[str]:
        low = text.lower()
        if not any(t in low for t in _TRIGGERS) or not self._strong.search(text):
            return [text]
        cuts = [(m.start(), m.end()) for m in self._markers.finditer(text) if m.end() > m.start()]
        if not cuts:
            return [text]
        bounds = [0] + [x for c in cuts for x in c] + [len(text)]
        parts = [text[bounds[i] : bounds[i + 1]].strip(" \t\n\"'`()[]{}<>") for i in range(0, len(bounds), 2)]
        parts = [p for p in parts if sum(c.isalpha() for c in p) >= 2 and not _VERDICT_ONLY.fullmatch(p)]
        if not parts:
            return [text]
        return _at_most(parts, MAX_PIECES, "\n")


def _at_most(pieces: list[str], n: int, joiner: str = " ") -> list[str]:
    """`pieces` with those from the n-th on scored together."""
    return pieces if len(pieces) <= n else pieces[: n - 1] + [joiner.join(pieces[n - 1 :])]


def _sentence_bar(sentence: str) -> float:
    """The block probability from which a plain sentence scored alone may decide a check."""
    return SHORT_DECIDES_AT if len(sentence.split()) < SHORT_SENTENCE_WORDS else ALONE_DECIDES_AT


def _sentences(text: str) -> list[str]:
    """The sentences of a text; a break inside a quotation (`says "Q: why? A: because."`) does not end one."""
    inside = [m.span() for m in _QUOTATION.finditer(text)]
    out, start = [], 0
    for m in _SENTENCE_BREAK.finditer(text):
        if not any(a < m.start() < b for a, b in inside):
            out.append(text[start : m.start()])
            start = m.end()
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


def _quoting(sentence: str) -> bool:
    return any(c in sentence for c in _QUOTE_CHARS)


def _plain_sentences(sentences: list[str]) -> list[str]:
    """Of a text's sentences (`_sentences`), when it has several, those that can be judged alone:
    MIN_SENTENCE_WORDS words or more and no quotation in them (reported speech, out of its sentence, could read as
    anything). A harmful request with harmless small talk around it ("Thanks in advance!", a story) is then
    judged as if it came alone."""
    if len(sentences) < 2:
        return []
    return [s for s in sentences if len(s.split()) >= MIN_SENTENCE_WORDS and not _quoting(s)]


def _reported_speech(sentences: list[str]) -> list[str]:
    """The caps of a message (its `_sentences`) that quotes someone in some of its sentences and not in others:
    its own words (the other sentences), then each quoting sentence alone (at most MAX_PIECES); [] for any
    other text."""
    quoting = [s for s in sentences if _QUOTATION.search(s)]
    own = [s for s in sentences if not _quoting(s)]
    if not quoting or not own or len(quoting) + len(own) < len(sentences):
        return []
    return [" ".join(own)] + _at_most(quoting, MAX_PIECES)


def _quotations(text: str) -> list[str]:
    """What the text quotes, when that is MIN_QUOTATION_WORDS words or more: a request written as someone else's
    words (`My cousin keeps asking "..."`, then a story) is judged as if it came alone, while short sayings and
    verdict-like quotes ("the answer is no", "Verdict: guilty") stay in their sentence."""
    return [q.strip() for q in _QUOTATION.findall(text) if len(q.split()) >= MIN_QUOTATION_WORDS]


def _closer(literal: str) -> str:
    """The characters that end a span: the delimiters right after it, or a newline when the span ends a line."""
    m = re.match(r"[\"'`)\]}>|]+", literal)
    if m:
        return "".join(dict.fromkeys(m.group(0)))
    return "\n" if not literal or literal[0] == "\n" else ""


@functools.lru_cache(maxsize=64)
def structure(template: str) -> TemplateStructure:
    return TemplateStructure(template)


def render_data(template: str, **values: str) -> str:
    """`template` filled with the values as data: canonical, delimiters neutralised (see the module docstring)."""
    return structure(template).render(values)


class KnownTemplates:
    """The templates an engine's classifier prompts are matched against (thread-safe; registering is idempotent).

    `scripts`: the scripts the model was trained on, for `Plan.familiar` (Latin for the embedded guard).
    """

    def __init__(self, scripts: Iterable[str] = ("LATIN",)) -> None:
        self.scripts = frozenset(scripts)
        self._known: dict[str, TemplateStructure] = {}
        self._lock = threading.Lock()
        self._told = False

    def register(self, templates: Iterable[str]) -> int:
        """Add templates; those without a plain per-request variable (or with other tags) are skipped. Returns
        how many are known afterwards."""
        with self._lock:
            for t in templates:
                if t not in self._known:
                    try:
                        self._known[t] = structure(t)
                    except ValueError as e:
                        log.debug("template not used for structure-aware scoring: %s", e)
            return len(self._known)

    def __len__(self) -> int:
        return len(self._known)

    def tail(self, prompt: str, min_chars: int) -> str | None:
        """The longest fixed text a known template ends with (after its last variable) that `prompt` ends with,
        if at least `min_chars` long: the same characters in every prompt rendered from that template."""
        found = None
        for s in list(self._known.values()):
            tail = s.literals[-1]
            if len(tail) >= min_chars and (found is None or len(tail) > len(found)) and prompt.endswith(tail):
                found = tail
        return found

    def plan(self, prompt: str) -> Plan | None:
        """The scoring plan of the most specific known template `prompt` is a rendering of, else None (said
        once per engine in the log: such a prompt is scored literally)."""
        best, values = None, None
        for s in list(self._known.values()):
            if best is None or s.fixed_length > best.fixed_length:
                found = s.match(prompt)
                if found is not None:
                    best, values = s, found
        if best is None:
            if not self._told:
                self._told = True
                log.warning("a `choices` prompt matches none of the %d known template(s): it is scored as it is; "
                            "register its template (Engine.register_templates, or pre-warm it) to have the "
                            "user's text scored as data", len(self._known))
            return None
        return best.plan(values, self.scripts)


def guard_info(model_dir: str | Path) -> dict:
    """What `train-guard` recorded in a guard directory's config.json (its `guard` section: command, templates,
    starting point, ...); {} for any other checkpoint or an unreadable file."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text()).get("guard", {})
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def trained_templates(model_dir: str | Path) -> list[str]:
    """The templates a guard directory records in its config.json (`guard.templates`); [] for any other
    checkpoint."""
    templates = guard_info(model_dir).get("templates", [])
    return [t for t in templates if isinstance(t, str)] if isinstance(templates, list) else []



def share(s: ScoreResult, choice: str) -> float:
    """The probability of `choice` normalised over the scored choices."""
    top = max(s.logprobs.values())
    return math.exp(s.logprobs[choice] - top) / sum(math.exp(lp - top) for lp in s.logprobs.values())


def most_blocking(scores: Sequence[ScoreResult], first: str, plan: Plan | None = None) -> ScoreResult:
    """The score that decides the check (`Plan.deciding`; without a plan the one with the highest probability of
    `first`, the block answer), every scored token counted."""
    p_block = [share(s, first) for s in scores]
    worst = scores[plan.deciding(p_block) if plan else max(range(len(scores)), key=p_block.__getitem__)]
    return replace(worst, prompt_tokens=sum(s.prompt_tokens for s in scores),
                   cached_tokens=sum(s.cached_tokens for s in scores))


def score_as_data(engine: Engine, prompt: str, choices: Sequence[str],
                  unfamiliar: str = "score") -> tuple[ScoreResult, str | None]:
    """`choices` scored with the user's text as data when `prompt` renders a template the engine knows (the
    most blocking of the whole span and its pieces), literally otherwise. Returns the score and the answer the
    `unfamiliar` policy forces ("block" / "allow"), if any (see `_policy`)."""
    plan = engine.templates.plan(prompt)
    if plan is None:
        return engine.score(prompt, choices, over_choices=True), None
    plan, forced = _policy(plan, unfamiliar)
    return most_blocking(engine.score_all(plan.prompts, choices, over_choices=True), choices[0], plan), forced


async def ascore_as_data(engine: Engine, prompt: str, choices: Sequence[str],
                         unfamiliar: str = "score") -> tuple[ScoreResult, str | None]:
    """`score_as_data` without blocking the event loop; the pieces are scored concurrently (batched)."""
    plan = engine.templates.plan(prompt)
    if plan is None:
        return await engine.ascore(prompt, choices, over_choices=True), None
    plan, forced = _policy(plan, unfamiliar)
    scores = await asyncio.gather(*(engine.ascore(p, choices, over_choices=True) for p in plan.prompts))
    return most_blocking(scores, choices[0], plan), forced


def _policy(plan: Plan, unfamiliar: str) -> tuple[Plan, str | None]:
    """The plan to score and the forced answer for user text mostly outside the model's scripts: `score`
    it as it is; `block` it; `allow` it, but score the words it can read when there are any (so a harmful
    English request padded with text in another script is still judged)."""
    if unfamiliar == "score" or plan.familiar >= 0.5:
        return plan, None
    if unfamiliar == "block":
        return plan, "block"
    return (replace(plan, prompts=plan.readable, bars=(), caps=()), None) if plan.readable else (plan, "allow")
