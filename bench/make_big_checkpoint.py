"""Write a random RWKV-7 checkpoint of a released model's shape to disk, one tensor at a time (outside CI).

For trying big models on small machines: the 7.2B shape (L32, C4096, V65536; LoRA ranks 128/128/96/480,
as the training code's formulas give for C = 4096) is 14.4 GB in bf16, and is streamed into a single
BlinkDL-named .safetensors file without ever holding more than one tensor in memory. Weights are random
(normal, scaled by 1/sqrt(fan-in)), so the model loads, runs and generates, but says nothing sensible.
Usage: python bench/make_big_checkpoint.py /data/rwkv7-7b-random.safetensors [--shape 7b]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from pathlib import Path

import torch
from rwkv7_provider.model import RWKV7Config
from rwkv7_provider.model.checkpoint import expected_shapes

log = logging.getLogger("make_big_checkpoint")

SHAPES = {
    "1.5b": RWKV7Config(n_layer=24, n_embd=2048, dim_w=96, dim_a=96, dim_v=64, dim_g=256),
    "2.9b": RWKV7Config(n_layer=32, n_embd=2560, dim_w=96, dim_a=96, dim_v=64, dim_g=320),
    "7b": RWKV7Config(n_layer=32, n_embd=4096, dim_w=128, dim_a=128, dim_v=96, dim_g=480),
}


def random_tensor(name: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Plausible scales per kind of parameter: norms near 1, mixing coefficients in (0, 1), matrices ~1/sqrt(fan-in)."""
    leaf = name.split(".")[-2] if name.endswith((".weight", ".bias")) else name.split(".")[-1]
    if name.endswith(".bias"):
        return torch.zeros(shape)
    if leaf in ("ln0", "ln1", "ln2", "ln_x", "ln_out", "k_a"):
        return torch.ones(shape)
    if leaf.startswith("x_"):
        return torch.rand(shape, generator=g)
    if leaf == "k_k":
        return torch.full(shape, 0.85)
    if leaf == "emb":
        return torch.randn(shape, generator=g)
    if re.fullmatch(r"[wavg][12]", leaf):  # LoRA, used as x @ W: fan-in is the first dimension
        return torch.randn(shape, generator=g) / math.sqrt(shape[0])
    if len(shape) == 2 and leaf != "r_k":  # nn.Linear [out, in]
        return torch.randn(shape, generator=g) / math.sqrt(shape[1])
    return torch.randn(shape, generator=g) * 0.3


def write(path: Path, config: RWKV7Config, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> None:
    shapes = expected_shapes(config)
    size = dtype.itemsize
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * size
        header[name] = {"dtype": {torch.bfloat16: "BF16", torch.float32: "F32"}[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    g = torch.Generator().manual_seed(seed)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for i, (name, shape) in enumerate(shapes.items()):
            f.write(random_tensor(name, shape, g).to(dtype).contiguous().view(torch.uint8).numpy().tobytes())
            if i % 50 == 0:
                log.info("%s: %d / %d tensors, %.1f GB", path.name, i, len(shapes), f.tell() / 1e9)
    log.info("wrote %s: %.2fB parameters, %.1f GB", path, offset / size / 1e9, path.stat().st_size / 1e9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output .safetensors file")
    p.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write(args.out, SHAPES[args.shape], seed=args.seed)


if __name__ == "__main__":
    main()
