"""llama.cpp on the same random model, for `bench_cpu.py --llama-cpp DIR` (optional: the CPU peer of issue 21).

DIR is a llama.cpp source tree. The package registry has one inside the llama-cpp-python sdist:

    pip download --no-deps --no-binary :all: llama-cpp-python -d /tmp/llama && tar xzf /tmp/llama/*.tar.gz -C /tmp/llama
    python bench/bench_cpu.py --formats int8 --llama-cpp /tmp/llama/llama_cpp_python-*/vendor/llama.cpp

`llama-bench` is built there once (cmake, native flags; ~10 minutes on 2 cores). The benchmark's checkpoint is
written as a Hugging Face directory and converted by the tree's own `convert_hf_to_gguf.py` to f32 and q8_0,
which needs `transformers` importable by this Python (a benchmark-only dependency). Kept out of the project's
environment (transformers 5 wants a newer huggingface_hub than the one there), e.g.:

    pip install --no-deps --target /tmp/tf transformers 'huggingface_hub>=2.4,<3'
    PYTHONPATH=/tmp/tf python bench/bench_cpu.py --formats int8 --llama-cpp DIR Each timed call is one
`llama-bench` run of one test (`-r 1`), and the time is llama-bench's own (model loading excluded), so its
rounds interleave with ours like any other worker's.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("bench_cpu")

# llama.cpp's weight type -> our format of the same precision (the columns the aims compare)
GGUF_TYPES = {"f32": "fp32", "q8_0": "int8"}


def llama_bench(root: Path, threads: int) -> Path:
    """The tree's llama-bench, built first if missing."""
    binary = root / "build" / "bin" / "llama-bench"
    if binary.is_file():
        return binary
    if shutil.which("cmake") is None:
        raise SystemExit("--llama-cpp: building llama-bench needs cmake")
    log.info("building llama-bench in %s (once; ~10 minutes on 2 cores) ...", root / "build")
    flags = ["-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
             "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF"]
    subprocess.run(["cmake", "-S", str(root), "-B", str(root / "build"), *flags], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(root / "build"), "--target", "llama-bench", "-j", str(threads)],
                   check=True, capture_output=True)
    return binary


def convert(root: Path, checkpoint: Path, out: Path) -> dict[str, Path]:
    """`checkpoint` (a BlinkDL .pth) as GGUF files of each of GGUF_TYPES, through a Hugging Face directory."""
    import rwkv
    from rwkv7_provider.model import RWKV7

    if importlib.util.find_spec("transformers") is None:
        raise SystemExit("--llama-cpp: llama.cpp's convert_hf_to_gguf.py imports transformers: pip install transformers")
    hf = out / "hf"
    RWKV7.from_pretrained(checkpoint).save_pretrained(hf)
    # the converter reads the World vocabulary from the model directory; the `rwkv` package ships it
    shutil.copy(Path(rwkv.__file__).parent / "rwkv_vocab_v20230424.txt", hf)
    files = {}
    for kind in GGUF_TYPES:
        files[kind] = out / f"model-{kind}.gguf"
        log.info("converting to GGUF %s ...", kind)
        subprocess.run([sys.executable, str(root / "convert_hf_to_gguf.py"), str(hf), "--outtype", kind,
                        "--outfile", str(files[kind])], check=True, capture_output=True)
    return files


class LlamaBench:
    """One GGUF file timed by llama-bench, with bench_cpu's worker interface (`time(metric)`, `finish()`)."""

    def __init__(self, binary: Path, gguf: Path, kind: str, threads: int, decode_steps: int) -> None:
        self.name = f"llama.cpp {kind}"
        self.binary, self.gguf, self.threads, self.decode_steps = binary, gguf, threads, decode_steps
        self.info = ""

    def time(self, metric: str) -> float:
        """Seconds for the metric's tokens by llama-bench's clock (prefill_T: -p T; decode: -n steps)."""
        tokens = int(metric.removeprefix("prefill_")) if metric.startswith("prefill_") else self.decode_steps
        test = ["-p", str(tokens), "-n", "0"] if metric.startswith("prefill_") else ["-p", "0", "-n", str(tokens)]
        out = subprocess.run([str(self.binary), "-m", str(self.gguf), "-t", str(self.threads), "-r", "1", "-o", "json",
                              *test], check=True, capture_output=True, text=True)
        row = json.loads(out.stdout)[0]
        self.info = f"{row['model_type']}, build {row['build_commit']}, {row['n_threads']} threads"
        return tokens / row["avg_ts"]

    def finish(self) -> dict:
        return {"kernels": self.info, "peak_rss_mb": float("nan"), "estimate_mb": float("nan")}
