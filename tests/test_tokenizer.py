"""Tokenizers: the spec's exact ids, agreement with BlinkDL's own trie, round trips, streaming decode."""

from __future__ import annotations

import random

import pytest
from rwkv7_provider.model.tokenizer import (
    HFTokenizer,
    TokenizerError,
    WorldTokenizer,
    load_tokenizer,
    world_vocab,
)


@pytest.fixture(scope="module")
def world():
    return load_tokenizer("world")


def random_text(rng: random.Random, n: int) -> str:
    """Mixed scripts, emoji, whitespace runs and rare code points: the cases a trie gets wrong."""
    pools = [
        "abcdefghijklmnopqrstuvwxyz ABCXYZ 0123456789 .,;:!?'\"\n\n\t  ",
        "éüßøñçàè", "日本語中文字漢字", "Привет мир", "مرحبا", "😀🚀👍🏽", "\u200b\u00a0\U0001f9ea\U00010348",
    ]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(n))


def test_spec_examples(world):
    assert world.encode("User: hi\n\nAssistant:") == [24281, 59, 4571, 261, 5585, 41693, 59]
    assert world.encode("\n\n") == [261]
    assert world.vocab_size == 65536


def test_matches_blinkdl_trie_on_random_text(world):
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    trie = TRIE_TOKENIZER(str(world_vocab()[0]))
    rng = random.Random(0)
    for _ in range(200):
        text = random_text(rng, rng.randint(1, 80))
        assert world.encode(text) == trie.encode(text), text


def test_round_trip_random_unicode(world):
    rng = random.Random(1)
    for _ in range(200):
        text = random_text(rng, rng.randint(0, 100))
        assert world.decode(world.encode(text)) == text


def stream(tok, ids):
    dec = tok.stream_decoder()
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    return pieces


@pytest.mark.parametrize("text", ["日本語 and emoji 😀🚀", "naïve café", "\U0001f9ea\U00010348 x"])
def test_streaming_never_emits_half_characters(world, text):
    ids = world.encode(text)
    # split every multi-byte character across tokens: feed single-byte tokens for the UTF-8 bytes
    byte_ids = [world_vocab()[1].index(bytes([b])) for b in text.encode("utf-8")]
    for seq in (ids, byte_ids):
        pieces = stream(world, seq)
        assert "".join(pieces) == text
        assert all("\ufffd" not in p for p in pieces)


def test_hf_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello world", "héllo wörld 日本"] * 20, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    hf = load_tokenizer(tmp_path)
    assert isinstance(hf, HFTokenizer)
    text = "héllo 日本 world"
    assert hf.decode(hf.encode(text)) == text
    pieces = stream(hf, hf.encode(text))
    assert "".join(pieces) == text and all("\ufffd" not in p for p in pieces)
    # found automatically beside a model directory
    assert isinstance(load_tokenizer(model_path=tmp_path, vocab_size=hf.vocab_size), HFTokenizer)


def trained(tmp_path, kind: str) -> HFTokenizer:
    """A small tokenizer.json whose decoder treats a text's first token specially (WordPiece joins "##"
    pieces and drops the space before them, Metaspace drops the text's leading space)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    corpus = ["hello world, it's the naïve café: don't stop 日本語 😀", "a quick brown fox jumps over a lazy dog"] * 50
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False)
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.BertPreTokenizer(), decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[UNK]"])
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=150, unk_token="<unk>", special_tokens=["<unk>"])
    tok.train_from_iterator(corpus, trainer)
    tok.save(str(tmp_path / f"{kind}.json"))
    return HFTokenizer(tmp_path / f"{kind}.json")


class Counting:
    """A tokenizer's decode, recording how many ids each call decodes."""

    def __init__(self, tok) -> None:
        self.tok, self.lengths = tok, []

    def decode(self, ids: list[int]) -> str:
        self.lengths.append(len(ids))
        return self.tok.decode(ids)


@pytest.mark.parametrize("kind", ["guard", "wordpiece", "metaspace"])
def test_hf_streaming_is_the_whole_decode_in_short_windows(tmp_path, kind):
    """A long generation streams through windows of a few ids (re-decoding everything on every token made it
    quadratic), and the pieces still join into exactly the decode of all the ids, random ids included."""
    from rwkv7_provider.model.tokenizer import PrefixStreamDecoder

    from rwkv7_provider.runtime.registry import DEFAULT_MODEL_DIR

    tok = load_tokenizer(DEFAULT_MODEL_DIR) if kind == "guard" else trained(tmp_path, kind)
    rng = random.Random(2)
    words = ["hello", "world,", "it's", "the", "naïve", "café:", "don't", "stop", "a", "quick", "brown", "fox",
             "jumps", "over", "a", "lazy", "dog"]
    for trial in range(200):
        if trial % 2:
            ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randint(1, 40))]
        else:
            ids = tok.encode(" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))))
        assert "".join(stream(tok, ids)) == tok.decode(ids), ids
    counting = Counting(tok)
    decoder = PrefixStreamDecoder(counting)
    ids = tok.encode(" ".join(rng.choice(words) for _ in range(300)))
    assert "".join([decoder.push(i) for i in ids] + [decoder.flush()]) == tok.decode(ids)
    assert len(ids) > 300 and max(counting.lengths) <= 8


def test_world_chosen_for_world_vocab_size(tmp_path):
    assert isinstance(load_tokenizer(model_path=tmp_path / "x.pth", vocab_size=65536), WorldTokenizer)


def test_missing_tokenizer_is_named(tmp_path):
    with pytest.raises(TokenizerError, match="missing tokenizer"):
        load_tokenizer(model_path=tmp_path / "pile.pth", vocab_size=50304)
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(tmp_path / "nope.json")


def test_vocabulary_that_does_not_fit_the_model(world):
    with pytest.raises(TokenizerError, match="do not belong together"):
        load_tokenizer(world, vocab_size=50304)


def test_unreadable_tokenizer_file(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot read"):
        load_tokenizer(bad)


def _guard_tokenizer():
    from rwkv7_provider.runtime.registry import DEFAULT_MODEL_DIR

    return load_tokenizer(DEFAULT_MODEL_DIR / "tokenizer.json")


def test_a_proven_cut_tokenises_like_the_whole_text():
    """`boundary`: for the embedded guard's byte-level BPE, tokenising a prefix cut before its last line break
    and the rest separately gives the whole text's tokens, whatever follows (random text, whitespace, control
    tokens written as text, lone surrogates) and whatever the prefix."""
    from rwkv7_provider.guard.prompts import NEMO_REFERENCE_INPUT
    from rwkv7_provider.runtime.templates import template_prefix

    tok, rng = _guard_tokenizer(), random.Random(5)
    suffixes = ["", " ", "\n", "\n\nUser", '"', "'s", "<|endoftext|>", "\ud800x", "  \t hello", "Hello", "123"]
    suffixes += [random_text(rng, rng.randint(1, 40)) for _ in range(150)]
    prefixes = [template_prefix(NEMO_REFERENCE_INPUT)] + [random_text(rng, rng.randint(5, 80)) + "x\n" for _ in range(30)]
    for prefix in prefixes:
        cut = tok.boundary(prefix)
        assert 0 < cut < len(prefix) and prefix[cut] == "\n"
        for s in suffixes:
            assert tok.encode(prefix + s) == tok.encode(prefix[:cut]) + tok.encode(prefix[cut:] + s), (prefix, s)
    assert tok.boundary("no line break") == 0 and tok.boundary("\n  \n after spaces only") == 0


def test_no_cut_where_the_tokenizer_cannot_prove_one(world, tmp_path):
    """Greedy longest match (World) and byte-level BPE with a leading space or a normaliser can merge across
    any cut: no cut is claimed."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    assert world.boundary("Policy text\nUser message: ") == 0
    for prefix_space, normalizer in ((True, None), (False, normalizers.NFKC())):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
        if normalizer is not None:
            tok.normalizer = normalizer
        tok.save(str(tmp_path / "tokenizer.json"))
        assert load_tokenizer(tmp_path / "tokenizer.json").boundary("Policy text\nUser message: ") == 0
    assert _guard_tokenizer().boundary("Policy text\nUser message: ") == len("Policy text")
