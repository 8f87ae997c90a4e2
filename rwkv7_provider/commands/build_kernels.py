"""`rwkv7-provider build-kernels`: compile the CPU kernels now (e.g. in a container build) instead of when the
first model loads, and optionally measure which of them a checkpoint should run on this machine.

The library goes to $RWKV7_KERNEL_DIR (default ~/.cache/rwkv7_provider/kernels), keyed by sources, compiler
and torch version, so any process with the same torch and compiler loads it without compiling. The kernel
choice depends on the machine it is measured on: measure where the model will serve (`--checkpoint`), or
let the first load there do it.
"""

from __future__ import annotations

import argparse
import sys

import torch

from ..errors import ParameterError
from ..model import RWKV7, cpu_kernels, kernel_choice
from ..model.quantize import FORMATS
from ..runtime.registry import resolve_model_path
from . import parse_args


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--checkpoint", help="also load this RWKV-7 checkpoint ('default': the embedded guard) and "
                        "measure, on this machine, which kernels its decode should run (replacing a cached measurement)")
    parser.add_argument("--quantize", choices=sorted(FORMATS), help="with --checkpoint: the weight format "
                        "to measure for (default: float32, as loaded)")
    parser.add_argument("--threads", type=int, help="with --checkpoint: torch CPU threads to measure with (the "
                        "choice is per thread count; default: torch's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args("build-kernels", __doc__, build_parser, argv)
    if args.threads is not None and args.threads < 1:
        raise ParameterError(f"--threads must be at least 1, got {args.threads}")
    status = cpu_kernels.status()  # builds, logging the compile and its duration
    if not status.ok:
        print(f"rwkv7-provider build-kernels: the CPU kernels are unavailable: {status.why}", file=sys.stderr)
        return 1
    action = "built" if status.built else "already built and verified"
    print(f"CPU kernels {action}: {status.path} (instruction sets: {', '.join(status.isas)})")
    if args.checkpoint:
        if args.threads:
            torch.set_num_threads(args.threads)
        path = resolve_model_path(args.checkpoint)
        model = RWKV7.from_pretrained(path, quantize=args.quantize)  # measures unless cached
        if kernel_choice.last_was_cached():
            kernel_choice.prepare(model, measure_again=True)
        print(kernel_choice.last_report())
    return 0
