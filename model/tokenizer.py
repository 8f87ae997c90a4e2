"""Tokenizers: the RWKV World vocabulary and any Hugging Face `tokenizer.json`.

World encoding is greedy longest match over UTF-8 bytes. We use `pyrwkv-tokenizer` (Rust, Apache-2.0)
for encoding: it is exact on the spec's examples and on random text (tests compare it with BlinkDL's
own trie from the `rwkv` package) and about 100x faster than a Python trie. Its vocabulary file
(`rwkv_vocab_v20230424.txt`, shipped inside that package) also gives us each token's bytes, which
streaming decode needs so that a UTF-8 character split across tokens is never emitted half-way.
"""

from __future__ import annotations

import ast
import codecs
import functools
import json
from pathlib import Path

from ..errors import TokenizerError

WORLD_VOCAB_SIZE = 65536


def encodable(text: str) -> str:
    """`text` as UTF-8 can carry it: a Python str may hold lone surrogates ("\\ud800"), which no tokenizer can
    encode; they become U+FFFD, and a surrogate pair written as two code units becomes its character."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


class Tokenizer:
    """Common interface: encode, decode, vocab_size and an incremental decoder for streaming.

    `encode` accepts any Python str (see `encodable`)."""

    name: str
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def stream_decoder(self) -> StreamDecoder:
        return PrefixStreamDecoder(self)

    def token_bytes(self, token_id: int) -> bytes:
        """One token's bytes. Here: its decoded text's, which is exact except for a token holding part of a
        character (tokenizers that know their byte table say so)."""
        return self.decode([token_id]).encode("utf-8")

    def boundary(self, prefix: str) -> int:
        """The largest c such that for every text s, encode(prefix + s) == encode(prefix[:c]) +
        encode(prefix[c:] + s): where a known prompt's fixed text can be cut so that only the rest is tokenised
        per request. 0 (no such cut) unless the tokenizer can prove one."""
        return 0


class StreamDecoder:
    """Turns token ids into text deltas, holding back incomplete UTF-8 characters."""

    def push(self, token_id: int) -> str:
        raise NotImplementedError

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character becomes U+FFFD)."""
        raise NotImplementedError


class ByteStreamDecoder(StreamDecoder):
    """Exact streaming for tokenizers whose tokens are byte strings (World)."""

    def __init__(self, token_bytes) -> None:
        self.token_bytes = token_bytes
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self.decoder.decode(self.token_bytes(token_id))

    def flush(self) -> str:
        return self.decoder.decode(b"", final=True)


class PrefixStreamDecoder(StreamDecoder):
    """Generic streaming: decode a window of the latest ids and emit what the newest ones add to it, unless
    that ends mid-character.

    The window starts one emission back, so decoders that treat a text's first token specially (a leading
    space dropped, "##" pieces joined) see the same context as a decode of the whole text; re-decoding
    everything on every token made a long generation quadratic in its length.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.context: list[int] = []  # the ids of the last emission, decoded again as context
        self.pending: list[int] = []  # ids not emitted yet

    def push(self, token_id: int) -> str:
        self.pending.append(token_id)
        delta = self._added()
        if not delta or delta.endswith("\ufffd"):
            return ""
        self.context, self.pending = self.pending, []
        return delta

    def flush(self) -> str:
        delta = self._added()
        self.context, self.pending = self.pending, []
        return delta

    def _added(self) -> str:
        """The text the pending ids add to their context."""
        before = self.tokenizer.decode(self.context)
        return self.tokenizer.decode(self.context + self.pending)[len(before) :]


@functools.lru_cache(maxsize=1)
def world_vocab() -> tuple[Path, tuple[bytes, ...]]:
    """Path of the World vocabulary file and the bytes of every token id (index = id)."""
    try:
        import pyrwkv_tokenizer
    except ImportError as e:  # a declared dependency; only a broken install gets here
        raise TokenizerError("the World tokenizer needs the `pyrwkv-tokenizer` package") from e
    path = Path(pyrwkv_tokenizer.__file__).with_name("rwkv_vocab_v20230424.txt")
    table = [b""] * WORLD_VOCAB_SIZE
    for line in path.read_text(encoding="utf-8").splitlines():
        idx, rest = line.split(" ", 1)
        literal, _, length = rest.rpartition(" ")
        token = ast.literal_eval(literal)
        token = token.encode("utf-8") if isinstance(token, str) else token
        if len(token) != int(length):
            raise TokenizerError(f"corrupt World vocabulary line: {line!r}")
        table[int(idx)] = token
    return path, tuple(table)


class WorldTokenizer(Tokenizer):
    """RWKV World tokenizer (all World / G0 / G1 models). Id 0 is end-of-text and never a text token."""

    name = "world"
    vocab_size = WORLD_VOCAB_SIZE

    def __init__(self) -> None:
        import pyrwkv_tokenizer

        _, self.table = world_vocab()
        self.impl = pyrwkv_tokenizer.RWKVTokenizer()

    def encode(self, text: str) -> list[int]:
        return list(self.impl.encode(encodable(text)))

    def token_bytes(self, token_id: int) -> bytes:
        return self.table[token_id]

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.table[i] for i in ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return ByteStreamDecoder(self.token_bytes)


def specials_as_text(impl):
    """A `tokenizers.Tokenizer` that encodes special-token strings found in text ("<|endoftext|>") as the plain
    characters they are, never as the special token: text is data, and a user who types a control token must
    not be able to end a document or a prompt. Special tokens stay addressable by id. Returns `impl`."""
    impl.encode_special_tokens = True
    return impl


class HFTokenizer(Tokenizer):
    """Any Hugging Face `tokenizer.json` (Pile models use GPT-NeoX-20B's; the embedded guard ships its own).

    Special-token strings in text are encoded as text (`specials_as_text`); World has no such strings."""

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer as _Tokenizer

        try:
            self.impl = specials_as_text(_Tokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises a bare Exception for unreadable files
            raise TokenizerError(f"cannot read tokenizer file {path}: {e}") from e
        self.name = str(path)
        self.path = Path(path)
        self.vocab_size = self.impl.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.impl.encode(encodable(text), add_special_tokens=False).ids

    def boundary(self, prefix: str) -> int:
        """Before the last line break of `prefix` that follows a non-space character, for a byte-level BPE with
        GPT-2's pre-tokenizer regex and nothing else (the embedded guard's). Why that is exact: the regex has no
        look-behind, and only its whitespace alternatives look ahead (one character); the character before the
        cut is not whitespace, so the pre-token holding it ends at the cut both when the line break follows and
        when the text ends there, no pre-token before it looks past it, and scanning the rest alone finds the
        same pre-tokens; BPE merges inside pre-tokens. (A cut after the line break is not exact: "\n\n" at the
        end of a text is one pre-token, before a letter two.) No normaliser, prefix space, dropout or
        non-special added token (matched across the cut) may change that; any other tokenizer gets 0."""
        if not self._splits_before_line_breaks:
            return 0
        for c in range(len(prefix) - 1, 0, -1):
            if prefix[c] == "\n" and not prefix[c - 1].isspace():  # isspace: every regex \s and more
                return c
        return 0

    @functools.cached_property
    def _splits_before_line_breaks(self) -> bool:
        config = json.loads(self.impl.to_str())
        pre, model = config.get("pre_tokenizer") or {}, config.get("model") or {}
        return (
            config.get("normalizer") is None
            and pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space")
            and model.get("type") == "BPE" and not model.get("dropout")
            and all(token.get("special") for token in config.get("added_tokens") or [])
            and self.impl.encode_special_tokens
        )

    def decode(self, ids: list[int]) -> str:
        return self.impl.decode(ids, skip_special_tokens=False)

    def token_id(self, token: str) -> int | None:
        return self.impl.token_to_id(token)


def load_tokenizer(
    spec: str | Path | Tokenizer | None = None,
    *,
    model_path: str | Path | None = None,
    vocab_size: int | None = None,
) -> Tokenizer:
    """Resolve a tokenizer: "world", a tokenizer.json (or a directory holding one), or, with spec None,
    the one that belongs to `model_path` (a tokenizer.json in the model directory, else World when
    the model has the World vocabulary size). `vocab_size` (the model's) is checked against it."""
    tok = spec if isinstance(spec, Tokenizer) else _resolve(spec, model_path, vocab_size)
    if vocab_size is not None and tok.vocab_size > vocab_size:
        raise TokenizerError(
            f"tokenizer {tok.name} has {tok.vocab_size} tokens but the model's vocabulary has only {vocab_size}: "
            "they do not belong together"
        )
    return tok


def _resolve(spec: str | Path | None, model_path: str | Path | None, vocab_size: int | None) -> Tokenizer:
    if spec is not None:
        if str(spec).lower() in ("world", "rwkv_vocab_v20230424"):
            return WorldTokenizer()
        p = Path(spec).expanduser()
        if p.is_dir():
            p = p / "tokenizer.json"
        if not p.is_file():
            raise TokenizerError(f"tokenizer not found: {spec} (expected 'world' or a tokenizer.json)")
        return HFTokenizer(p)
    if model_path is not None:
        mp = Path(model_path).expanduser()
        candidate = (mp if mp.is_dir() else mp.parent) / "tokenizer.json"
        if candidate.is_file():
            return HFTokenizer(candidate)
    if vocab_size == WORLD_VOCAB_SIZE:
        return WorldTokenizer()
    raise TokenizerError(
        f"missing tokenizer: the model (vocabulary {vocab_size}) is not a World model and no tokenizer.json "
        "was found beside it; pass tokenizer='path/to/tokenizer.json' (Pile models use GPT-NeoX-20B's)"
    )
