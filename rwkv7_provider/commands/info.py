"""`rwkv7-provider info`: what a checkpoint is and what it needs, from its headers alone (no weights read).

Shape, parameter count and stored dtype come from `inspect_checkpoint`; the memory per dtype and `quantize`
format from `estimate_memory`, the same estimate that makes loading refuse a model that does not fit, so the
table says in advance which `dtype:` / `quantize:` a machine can serve.
"""

from __future__ import annotations

import argparse
import json

import torch

from ..model.checkpoint import CheckpointInfo, inspect_checkpoint
from ..model.loading import MemoryEstimate, available_memory, estimate_memory
from ..model.quantize import FORMATS
from ..runtime.registry import DEFAULT_MODEL, resolve_model_path
from ..runtime.settings import EngineSettings
from . import parse_args

MIB = 1 << 20
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def estimates(info: CheckpointInfo, device: str) -> list[MemoryEstimate]:
    """One estimate per dtype, and on CPU per `quantize` format (float32 for the rest of the model)."""
    rows = [estimate_memory(info, dtype=d, device=device) for d in DTYPES]
    if torch.device(device).type == "cpu":
        rows += [estimate_memory(info, device=device, quantize=f) for f in FORMATS]
    return rows


def report(info: CheckpointInfo, rows: list[MemoryEstimate], free: int | None) -> str:
    c = info.config
    lines = [
        f"checkpoint   {info.path} ({info.kind})",
        f"shape        {c.n_layer} layers x {c.n_embd} ({c.n_head} heads of {c.head_size}), vocabulary "
        f"{c.vocab_size}, FFN {c.ffn_dim}, LoRA ranks w/a/v/g {c.dim_w}/{c.dim_a}/{c.dim_v}/{c.dim_g}",
        f"parameters   {info.n_params:,} ({info.n_params / 1e6:.1f}M), stored as "
        f"{str(info.stored_dtype).removeprefix('torch.')} ({info.stored_bytes / MIB:.1f} MiB)",
        f"memory on {rows[0].device} (weights + working memory = total):",
    ]
    for e in rows:
        fits = "" if free is None else ("  fits" if e.total_bytes <= free else "  does not fit")
        lines.append(f"  {e.label:<18} {e.weights_bytes / MIB:9.1f} + {e.working_bytes / MIB:7.1f} = "
                     f"{e.total_bytes / MIB:9.1f} MiB{fits}")
    if free is not None:
        lines.append(f"available now: {free / MIB:.0f} MiB")
    return "\n".join(lines)


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("checkpoint", nargs="?", default=DEFAULT_MODEL,
                   help="a .pth / .safetensors file, a Hugging Face directory, or 'default' (the embedded guard)")
    p.add_argument("--device", default="cpu",
                   help="device to size for: cpu (every dtype and quantize format) or cuda[:N] (default: cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args("info", __doc__, build_parser, argv)
    info = inspect_checkpoint(resolve_model_path(args.checkpoint))
    device = EngineSettings.parse({"device": args.device}).device  # a ParameterError for a bad or absent one
    rows = estimates(info, device)
    free = available_memory(device)
    if not args.json:
        print(report(info, rows, free))
        return 0
    print(json.dumps({
        "path": str(info.path), "kind": info.kind, "config": info.config.to_dict(), "parameters": info.n_params,
        "stored_dtype": str(info.stored_dtype).removeprefix("torch."), "stored_bytes": info.stored_bytes,
        "device": device, "available_bytes": free,
        "memory": {e.label: {"weights_bytes": e.weights_bytes, "working_bytes": e.working_bytes,
                             "total_bytes": e.total_bytes} for e in rows},
    }, indent=1))
    return 0
