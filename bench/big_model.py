"""A big checkpoint on a small machine: the memory estimate per format, the clear error, then load and generate.

Prints the estimate of every format (headers only), tries float32 (on a machine too small for it this is the
`InsufficientMemoryError` with need and availability, raised before any weight is read), then loads in
--quantize, prefills a short prompt and decodes --tokens greedy tokens through `decode_step`, reporting load
time, decode tokens/s and peak RSS. Make the checkpoint with bench/make_big_checkpoint.py (outside CI).
Usage: python bench/big_model.py /data/rwkv7-7b-random.safetensors [--quantize int8] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import re
import resource
import time
from pathlib import Path

import torch
from rwkv7_provider.model import RWKV7, InsufficientMemoryError, estimate_memory, inspect_checkpoint
from rwkv7_provider.model.loading import available_memory

log = logging.getLogger("big_model")
GIB = 2**30


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--quantize", default="int8")
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    info = inspect_checkpoint(args.checkpoint)
    print(f"{info.path.name}: {info.n_params / 1e9:.2f}B parameters, {info.config}")
    print(f"available host RAM: {available_memory('cpu') / GIB:.1f} GiB")
    for fmt in (None, "bf16", "int8", "q4"):
        e = estimate_memory(info, quantize=fmt)
        print(f"  {e.label:<18} weights {e.weights_bytes / GIB:6.1f} GiB + working {e.working_bytes / GIB:4.1f} GiB")
    try:
        RWKV7.from_pretrained(args.checkpoint)
        print("float32: loaded (this machine has room for it)")
    except InsufficientMemoryError as e:
        print(f"float32: InsufficientMemoryError: {e}")
    t0 = time.perf_counter()
    model = RWKV7.from_pretrained(args.checkpoint, quantize=args.quantize)
    print(f"quantize={args.quantize!r}: loaded in {time.perf_counter() - t0:.0f} s")
    prompt = torch.randint(1, info.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        t0 = time.perf_counter()
        hidden, state = model.forward_hidden(prompt)
        prefill_s = time.perf_counter() - t0
        token = model.head(hidden[:, -1]).argmax(-1)
        out, t0 = [], time.perf_counter()
        for _ in range(args.tokens):
            token = model.head(model.decode_step(token, state)).argmax(-1)
            out.append(int(token))
        decode_s = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    status = Path("/proc/self/status").read_text() if Path("/proc/self/status").is_file() else ""
    anon = int(re.search(r"RssAnon:\s+(\d+)", status).group(1)) / 2**20 if "RssAnon" in status else float("nan")
    print(f"prefill 8 tokens {prefill_s:.1f} s; decode {args.tokens / decode_s:.2f} tok/s; peak RSS {rss:.1f} GiB "
          f"(includes the checkpoint's memory-mapped pages); anonymous memory now {anon:.1f} GiB")
    print(f"generated ids: {out}")


if __name__ == "__main__":
    main()
