"""Tiny self-contained RWKV-7 checkpoints for tests, benchmarks and smoke runs: nothing is downloaded.

`random_state_dict` gives BlinkDL-named random weights for any config. `make_checkpoint` writes a model directory
(config.json + model.safetensors + a byte-level BPE tokenizer.json trained here on the guard prompts).
`favour="No"` (or any text) rigs the model so those tokens win at every position: `ln_out` gets a constant unit
along one channel and only the favoured tokens' head rows read that channel. A guard built that way
deterministically allows (favour "No") or blocks (favour "Yes") whatever the message. `make_encoder` writes a
stand-in BERT encoder for the guard's embedding init. `MergeTokenizer` and `merge_model` make a byte-level
tokenizer whose merges straddle a template's end, and a tiny model for it (engine and cache tests).

Run as a module (`python -m rwkv7_provider.testing DIR [--favour No]`) it writes one checkpoint.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from .guard.prompts import SELF_CHECK_INPUT, SELF_CHECK_OUTPUT
from .model import RWKV7, RWKV7Config, cpu_decode, cpu_kernels
from .model.checkpoint import expected_shapes
from .model.quantize import PackedLinear
from .model.tokenizer import ByteStreamDecoder, Tokenizer

SMALL = RWKV7Config(n_layer=2, n_embd=128, vocab_size=300, head_size=64, dim_w=16, dim_a=8, dim_v=8, dim_g=32)
WIDER = RWKV7Config(n_layer=3, n_embd=192, vocab_size=500, head_size=64, dim_w=24, dim_a=16, dim_v=12, dim_g=48)


def random_state_dict(config: RWKV7Config, seed: int = 0, layer0_v: bool = False) -> dict[str, torch.Tensor]:
    """BlinkDL-named random weights with scales that keep activations lively (no trained model needed).

    `layer0_v` adds the unused layer-0 v0/v1/v2 tensors that some released files carry.
    """
    g = torch.Generator().manual_seed(seed)
    C = config.n_embd

    def rand(shape, scale=1.0, offset=0.0):
        return torch.randn(shape, generator=g) * scale + offset

    sd: dict[str, torch.Tensor] = {}
    for name, shape in expected_shapes(config).items():
        leaf = name.rsplit(".", 1)[-1] if not name.endswith((".weight", ".bias")) else name.split(".")[-2]
        if name.endswith(".bias"):
            t = rand(shape, 0.1)
        elif leaf in ("ln0", "ln1", "ln2", "ln_x", "ln_out"):
            t = rand(shape, 0.1, 1.0)
        elif leaf.startswith("x_"):
            t = torch.rand(shape, generator=g)
        elif leaf in ("w0", "a0", "v0"):
            t = rand(shape, 0.5)
        elif leaf in ("w1", "a1", "v1", "g1", "w2", "a2", "v2", "g2"):
            t = rand(shape, 0.1)
        elif leaf == "k_k":
            t = rand(shape, 0.1, 0.85)
        elif leaf == "k_a":
            t = rand(shape, 0.1, 1.0)
        elif leaf == "r_k":
            t = rand(shape, 0.3)
        elif leaf == "emb":
            t = rand(shape, 1.0)
        else:  # square and FFN matrices, head
            t = rand(shape, 1.0 / shape[1] ** 0.5)
        sd[name] = t.float()
    if layer0_v:
        D = config.dim_v
        sd["blocks.0.att.v0"] = rand((1, 1, C), 0.5)
        sd["blocks.0.att.v1"] = rand((C, D), 0.1)
        sd["blocks.0.att.v2"] = rand((D, C), 0.1)
    return sd


SMALL = RWKV7Config(n_layer=2, n_embd=128, vocab_size=300, head_size=64, dim_w=16, dim_a=8, dim_v=8, dim_g=32)
WIDER = RWKV7Config(n_layer=3, n_embd=192, vocab_size=500, head_size=64, dim_w=24, dim_a=16, dim_v=12, dim_g=48)


VOCAB = 320
TINY = RWKV7Config(n_layer=2, n_embd=64, vocab_size=VOCAB, head_size=64, dim_w=8, dim_a=8, dim_v=8, dim_g=16)
BIAS = 30.0

CORPUS = [
    SELF_CHECK_INPUT,
    SELF_CHECK_OUTPUT,
    "System: You are a helpful assistant.\n\nUser: What is the weather in Paris?\n\nAssistant: It is sunny.",
    'Assistant: {"name": "get_weather", "arguments": {"city": "Paris"}}',
    "Answer: Yes\nAnswer: No\nYes No yes no",
    "The quick brown fox jumps over the lazy dog. How do I kill a Python process? Tell me a joke.",
]


def set_int16_activations(model: RWKV7, on: bool) -> None:
    """Every compressed GEMV of `model` with (or without) int16 activations (`Kernel.a16`), the rest of its
    measured kernel kept: tests that compare two paths to float rounding pin it off, whatever was measured."""
    for layer in model.modules():
        if isinstance(layer, PackedLinear):
            layer.kernel = replace(layer.kernel or cpu_kernels.Kernel(cpu_kernels.isa()), a16=on)
    cpu_decode.invalidate()  # the fused decode step's kept plan


def build_tokenizer(path: Path) -> HFTokenizer:
    """A byte-level BPE (any text encodes) with id 0 = end of text, saved as tokenizer.json."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.save(str(path))
    return tok


def make_checkpoint(directory: str | Path, *, favour: str | None = None, seed: int = 0) -> Path:
    """Write a tiny random RWKV-7 model directory; with `favour`, its tokens dominate every prediction."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(d / "tokenizer.json")
    sd = random_state_dict(TINY, seed=seed)
    if favour is not None:
        favoured = {i for text in (favour, " " + favour) for i in tok.encode(text).ids}
        sd["ln_out.weight"][0], sd["ln_out.bias"][0] = 0.0, 1.0
        sd["head.weight"][:, 0] = 0.0
        sd["head.weight"][sorted(favoured), 0] = BIAS
    with torch.device("meta"):
        model = RWKV7(TINY)
    model.load_state_dict(sd, assign=True)
    model.save_pretrained(d)
    return d


WORDS = ["kill", "murder", "bake", "cake", "invest", "stocks", "python", "process", "how", "do", "i", "a"]
SYNONYMS = {"murder": "kill", "stocks": "invest"}  # the fake encoder gives these the same vector


def make_encoder(path: Path, dim: int = 16) -> Path:
    """A stand-in BERT encoder for the guard's embedding init: a WordPiece tokenizer over WORDS (+ '##s') and a
    word-embedding table named as BERT checkpoints name it; SYNONYMS share a vector."""
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *WORDS, "##s"])}
    tok = HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    table = torch.randn(len(vocab), dim, generator=torch.Generator().manual_seed(0))
    for word, same in SYNONYMS.items():
        table[vocab[word]] = table[vocab[same]]
    path.mkdir()
    tok.save(str(path / "tokenizer.json"))
    save_file({"encoder.embeddings.word_embeddings.weight": table, "encoder.other": torch.zeros(2)},
              str(path / "model.safetensors"))
    return path


class MergeTokenizer(Tokenizer):
    """Stand-in tokenizer: one token per byte (id = byte + 1) plus a few multi-byte tokens, greedy longest
    match; the merges make tokens straddle a template's end ('"H' joins the quote and the user's text)."""

    name = "test-merge"
    MERGES = ('"H', "He", "ell", "llo", ": ", "\n\n", "Answer", "User")
    table: ClassVar[list[bytes]] = [b"", *(bytes([b]) for b in range(256)), *(m.encode() for m in MERGES)]
    vocab_size = len(table)

    def __init__(self) -> None:
        self.ids = {t: i for i, t in enumerate(self.table) if t}
        self.longest = max(map(len, self.table))

    def encode(self, text: str) -> list[int]:
        data, out, i = text.encode(), [], 0
        while i < len(data):
            n = next(n for n in range(min(self.longest, len(data) - i), 0, -1) if data[i : i + n] in self.ids)
            out.append(self.ids[data[i : i + n]])
            i += n
        return out

    def token_bytes(self, token_id: int) -> bytes:
        return self.table[token_id]

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.table[i] for i in ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> ByteStreamDecoder:
        return ByteStreamDecoder(self.token_bytes)


MERGE_TINY = RWKV7Config(
    n_layer=2, n_embd=64, vocab_size=MergeTokenizer.vocab_size, head_size=16, dim_w=8, dim_a=8, dim_v=8, dim_g=16
)
MERGE_TEMPLATE = 'User: check this message.\n\nMessage: "'
MERGE_TAIL = '"\nAnswer:'


def merge_model(seed: int = 0) -> RWKV7:
    """A random model of the MERGE_TINY shape (head size 16), for engine and cache tests with `MergeTokenizer`."""
    model = RWKV7(MERGE_TINY)
    model.load_state_dict(random_state_dict(MERGE_TINY, seed=seed))
    return model.eval().requires_grad_(False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--favour", help="text whose tokens the model always prefers (e.g. No)")
    args = parser.parse_args()
    print(make_checkpoint(args.directory, favour=args.favour))
