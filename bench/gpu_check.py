"""One prepared GPU run for the fused WKV-7 kernels and the serving engine: correctness first, then timings.

    python bench/gpu_check.py              # the whole check on a CUDA GPU (a few minutes on an H100)
    python bench/gpu_check.py --cpu-smoke  # the same code paths at tiny sizes, Triton interpreted on CPU
    python bench/gpu_check.py --only engine  # one section (kernels, model or engine)

The log goes to stderr and, when $OUT is set (the device machine), line by line to $OUT/gpu_check.log.
The engine section needs the package's runtime dependencies; pydantic is not in the H200 image, so carry
its wheels (pydantic, pydantic-core, annotated-types, typing-inspection; see the device README) or the
section fails with the import error. The engine's embedded guard and the guard-training part of the model
section also need tokenizers and safetensors (and tqdm for training); without them the guard-training part
is skipped with a note.

Correctness (exit status 1 if any check fails): the chunked forward (y, final state, input state untouched),
the chunked backward (gradients of r, w, k, v, a, b and the initial state) and the in-place decode step,
against the float32 sequential reference on the same device, bf16 and fp32 inputs, T up to 4096, B up to 8;
then the model's logits with the Triton WKV against the reference WKV, and the fused decode step
(`model/gpu_decode.py`) against the layers' step over 8 tokens in fp32 and bf16.
Timings (CUDA events, warm-up, median): chunked prefill at T = 1024 and 4096 for the 0.1B (H = 12) and 1.5B
(H = 32) head counts at B = 1 and 8, forward and forward + backward, next to fla's `chunk_rwkv7` on the same
inputs when fla is importable; the decode step at batch 1 and 64 with GB/s against the card's peak HBM
bandwidth; the 0.1B model's prefill and decode tokens/s, and its `decode_step` + head, fused vs the layers'.
Engine (`Engine` with its batching scheduler, CUDA-graph decode on a GPU): first parity in fp32 for the 0.1B
shape (random weights) and the embedded guard: greedy texts, seeded samples and Yes/No scores of many
concurrent requests against the same requests run one at a time on an eager engine (scores within 1e-4,
texts identical); then, in bf16, the graph capture time, decode tokens/s at batch 1 (graphs and eager),
aggregate tokens/s of 64 concurrent generations, and warm self-check latency p50/p99 and checks/s with 1,
16 and 256 concurrent asyncio clients, for both models.
Guard training (CUDA only): `train-guard --device cuda` for 60 steps in fp32 and with bf16 autocast.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import math
import os
import statistics
import sys
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

log = logging.getLogger("gpu_check")

N = 64  # head size of every released RWKV-7 model
# Peak HBM bandwidth in GB/s by device-name substring, first match wins ("NVIDIA H100 80GB HBM3" is the SXM).
PEAK_GBPS = (("H200", 4800.0), ("H100 PCIe", 2000.0), ("H100", 3350.0))
L2_FLUSH_BYTES = 256 << 20  # decode timing cycles through this many bytes of state so L2 cannot hold it
MODEL_0_1B = {"n_layer": 12, "n_embd": 768, "vocab_size": 65536, "head_size": 64}
MODEL_0_1B.update(dim_w=64, dim_a=64, dim_v=32, dim_g=128)
MODEL_TINY = {"n_layer": 2, "n_embd": 128, "vocab_size": 300, "head_size": 64}
MODEL_TINY.update(dim_w=16, dim_a=8, dim_v=8, dim_g=32)
ENGINE_TINY = MODEL_TINY | {"vocab_size": 16384}  # room for the embedded guard's tokenizer
FP32_TOL = 1e-4  # max |error| / max(1, max |reference|); observed ~1e-6 in fp32 (3-pass TF32 products)
HALF_TOL = 2e-2  # bf16 inputs: y and the gradients are rounded to bf16 (2^-8), products in TF32 (2^-11)


@dataclass
class EnginePlan:
    """The engine section's sizes."""

    shape: dict  # the random model's shape (next to the embedded guard)
    timing_dtype: torch.dtype
    parity_prompts: int  # prompts of the parity check (each: a greedy, a seeded and a scored request)
    parity_tokens: int
    decode_tokens: int  # batch-1 decode run (the eager comparison runs a quarter of it)
    generations: int  # concurrent generations ...
    generation_tokens: int  # ... of this many tokens each
    clients: list[int]  # concurrent self-check clients
    checks: int  # checks per client count, at least 4 per client (closed loop: the next when answered)


@dataclass
class Plan:
    """What to check and time; the GPU plan follows the issue, the smoke plan only exercises the code."""

    device: torch.device
    checks: list[tuple[int, int, int, bool, bool]]  # (B, T, H, with initial state, backward too)
    decode_checks: list[tuple[int, int]]  # (B, H)
    prefill: list[tuple[int, int, int]]  # (H, T, B)
    sweep: list[tuple[int, int, int]]  # (H, T, B)
    decode: list[tuple[int, int]]  # (B, H)
    model: dict
    model_prefill: list[tuple[int, int]]  # (B, T)
    model_decode: list[int]  # batch sizes
    engine: EnginePlan
    warmup: int = 3
    reps: int = 20
    failures: list[str] = field(default_factory=list)


def gpu_plan(reps: int) -> Plan:
    return Plan(
        device=torch.device("cuda"),
        checks=[
            (1, 1, 4, True, True),
            (2, 17, 4, True, True),
            (2, 64, 4, False, True),
            (8, 130, 4, True, True),
            (2, 1000, 4, True, True),
            (1, 4096, 4, True, True),
            (8, 4096, 2, True, True),
            (1, 1024, 12, True, False),
            (8, 4096, 32, False, False),
        ],
        decode_checks=[(1, 12), (64, 12), (8, 32)],
        prefill=[(h, t, b) for h in (12, 32) for t in (1024, 4096) for b in (1, 8)],
        sweep=[(12, 4096, 1), (32, 4096, 8)],
        decode=[(b, h) for b in (1, 64) for h in (12, 32)],
        model=MODEL_0_1B,
        model_prefill=[(1, 1024), (1, 4096), (8, 1024)],
        model_decode=[1, 64],
        engine=EnginePlan(MODEL_0_1B, torch.bfloat16, 16, 16, 256, 64, 256, [1, 16, 256], 512),
        reps=reps,
    )


def smoke_plan() -> Plan:
    return Plan(
        device=torch.device("cpu"),
        checks=[(1, 1, 2, True, True), (2, 17, 2, False, True), (1, 40, 2, True, False)],
        decode_checks=[(2, 2)],
        prefill=[(2, 32, 1)],
        sweep=[(2, 32, 1)],
        decode=[(1, 2), (2, 2)],
        model=MODEL_TINY,
        model_prefill=[(1, 16)],
        model_decode=[1, 2],
        engine=EnginePlan(ENGINE_TINY, torch.float32, 3, 6, 8, 3, 6, [1, 4], 8),
        warmup=1,
        reps=1,
    )


# ---- helpers ---------------------------------------------------------------------------------------------


def import_package() -> None:
    """Make `rwkv7_provider.kernels` / `.model` importable from a bare checkout (no `pip install -e .`)."""
    if importlib.util.find_spec("rwkv7_provider") is not None:
        return
    root = Path(__file__).resolve().parents[1]
    package = types.ModuleType("rwkv7_provider")
    package.__path__ = [str(root / "rwkv7_provider")]
    sys.modules["rwkv7_provider"] = package
    for name in ("kernels", "model"):  # the package-dir mapping of pyproject.toml
        spec = importlib.util.spec_from_file_location(
            f"rwkv7_provider.{name}",
            root / name / "__init__.py",
            submodule_search_locations=[str(root / name)],
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except ImportError:  # the model may need packages a GPU box lacks; the kernel checks do not
            del sys.modules[spec.name]


def make_inputs(B, T, H, dtype, device, with_state=True, seed=0):
    from rwkv7_provider.kernels.testing import wkv7_inputs

    return wkv7_inputs(B, T, H, N, dtype=dtype, device=device, with_state=with_state, seed=seed)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return (x.float() - ref.float()).abs().max().item() / max(1.0, ref.abs().max().item())


def gradients(fn, inputs, state, dy, dS):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    s = state.detach().clone().requires_grad_() if state is not None else None
    y, new = fn(*leaves, s)
    outputs, grads = [y], [dy]
    if dS is not None:
        outputs.append(new)
        grads.append(dS)
    return torch.autograd.grad(outputs, leaves + ([s] if s is not None else []), grads)


def make_timer(plan: Plan) -> Callable[[Callable[[], object]], float]:
    """Median milliseconds of `fn()`: CUDA events on a GPU, wall clock on CPU."""

    def measure(fn: Callable[[], object]) -> float:
        for _ in range(plan.warmup):
            fn()
        times = []
        for _ in range(plan.reps):
            if plan.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    return measure


def peak_gbps(plan: Plan) -> float | None:
    if plan.device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(plan.device)
    return next((gbps for key, gbps in PEAK_GBPS if key in name), None)


def guarded(plan: Plan, what: str, counts: bool):
    """Run a section; an exception is logged and, when `counts`, recorded as a failure."""

    def wrap(fn):
        try:
            fn()
        except Exception:  # noqa: BLE001 - log it, record it, and go on with the other sections
            log.error("%s raised:\n%s", what, traceback.format_exc())
            if counts:
                plan.failures.append(f"{what} raised")

    return wrap


# ---- correctness -----------------------------------------------------------------------------------------


def check_kernels(plan: Plan) -> None:
    from rwkv7_provider.kernels import wkv7_decode_, wkv7_reference
    from rwkv7_provider.kernels.triton_ops import wkv7_triton

    log.info(
        "\n== correctness against the fp32 sequential reference (error = max|x - ref| / max(1, max|ref|))"
    )
    log.info(
        f"{'dtype':<9}{'B':>3}{'T':>6}{'H':>4}  {'h0':<4}{'what':<9}{'worst':>10}  {'where':<7}{'tol':>8}"
        "  result"
    )
    for dtype, tol in ((torch.float32, FP32_TOL), (torch.bfloat16, HALF_TOL)):
        for i, (B, T, H, with_state, backward) in enumerate(plan.checks):
            inputs, state = make_inputs(B, T, H, dtype, plan.device, with_state, seed=i)
            kept = state.clone() if with_state else None
            with torch.no_grad():
                y, new = wkv7_triton(*inputs, state)
                y_ref, new_ref = wkv7_reference(*inputs, state)
            errors = {"y": rel_err(y, y_ref), "state": rel_err(new, new_ref)}
            if with_state and not torch.equal(state, kept):
                errors["h0 kept"] = math.inf
            del y, new, y_ref, new_ref
            report(plan, dtype, B, T, H, with_state, "forward", errors, tol)
            if backward:
                g = torch.Generator(device="cpu").manual_seed(100 + i)
                dy = torch.randn(B, T, H, N, generator=g).to(plan.device)
                dS = torch.randn(B, H, N, N, generator=g).to(plan.device) if with_state else None
                got = gradients(wkv7_triton, inputs, state, dy, dS)
                ref = gradients(wkv7_reference, inputs, state, dy, dS)
                names = ["dr", "dw", "dk", "dv", "da", "db", "dh0"]
                errors = {name: rel_err(x, x_ref) for name, x, x_ref in zip(names, got, ref)}
                del got, ref
                report(plan, dtype, B, T, H, with_state, "backward", errors, tol)

        for B, H in plan.decode_checks:
            inputs, state = make_inputs(B, 1, H, dtype, plan.device, seed=B * H)
            y_ref, new_ref = wkv7_reference(*inputs, state)
            buffer = state.clone()
            address = buffer.data_ptr()
            y = wkv7_decode_(*(t[:, 0] for t in inputs), buffer)
            errors = {"y": rel_err(y, y_ref[:, 0]), "state": rel_err(buffer, new_ref)}
            if buffer.data_ptr() != address:
                errors["in place"] = math.inf
            report(plan, dtype, B, 1, H, True, "decode", errors, tol)
    if plan.device.type == "cuda":
        torch.cuda.empty_cache()


def report(plan, dtype, B, T, H, with_state, what, errors, tol) -> None:
    where, worst = max(errors.items(), key=lambda item: item[1])
    ok = worst <= tol
    name = str(dtype).removeprefix("torch.")
    h0 = "yes" if with_state else "no"
    log.info(
        f"{name:<9}{B:>3}{T:>6}{H:>4}  {h0:<4}{what:<9}{worst:>10.2e}  {where:<7}{tol:>8.0e}"
        f"  {'ok' if ok else 'FAIL'}"
    )
    if not ok:
        plan.failures.append(f"{what} {name} B={B} T={T} H={H}: {where} error {worst:.2e} > {tol:.0e}")


# ---- kernel timings --------------------------------------------------------------------------------------


def load_fla(plan: Plan):
    if plan.device.type != "cuda":
        return None
    try:
        from fla.ops.rwkv7 import chunk_rwkv7
    except Exception as exc:  # noqa: BLE001 - not installed, or built for another torch / triton
        log.info("fla not importable (%s): fla columns left empty", exc.__class__.__name__)
        return None
    return chunk_rwkv7


def train_step(op, leaves: list[torch.Tensor], dy: torch.Tensor):
    """Forward and backward of y only (what a training step asks of the WKV)."""
    return torch.autograd.grad(op(*leaves)[0], leaves, dy)


def fla_op(fla, r, w, k, v, a, b):
    """fla's chunk_rwkv7 on our layout: [B, T, H, N] inputs, w the log decay, a = -kk, b = kk * iclr."""
    return fla(r=r, w=w, k=k, v=v, a=a, b=b, scale=1.0, initial_state=None, output_final_state=True)


def time_prefill(plan: Plan) -> None:
    from rwkv7_provider.kernels.triton_ops import wkv7_triton

    measure = make_timer(plan)
    fla = load_fla(plan)
    dtype = torch.bfloat16 if plan.device.type == "cuda" else torch.float32
    log.info(
        f"\n== chunked prefill, {str(dtype).removeprefix('torch.')} inputs, no initial state (ms, median)"
    )
    log.info(
        f"{'H':>3}{'T':>6}{'B':>3}  {'fwd':>8}{'Mtok/s':>8}{'fla fwd':>9}{'ours/fla':>9}"
        f"  {'fwd+bwd':>8}{'fla':>8}{'ours/fla':>9}"
    )
    for H, T, B in plan.prefill:
        inputs, _ = make_inputs(B, T, H, dtype, plan.device, with_state=False)
        dy = torch.randn_like(inputs[0])
        leaves = [t.clone().requires_grad_() for t in inputs]
        with torch.no_grad():
            fwd = measure(partial(wkv7_triton, *inputs))
        both = measure(partial(train_step, wkv7_triton, leaves, dy))
        fla_fwd = fla_both = None
        if fla is not None:
            theirs = partial(fla_op, fla)
            with torch.no_grad():
                if (H, T, B) == plan.prefill[0]:  # the same recurrence: fla's y should match ours
                    err = rel_err(theirs(*inputs)[0], wkv7_triton(*inputs)[0])
                    log.info("   fla's y against ours on this shape: error %.2e", err)
                fla_fwd = measure(partial(theirs, *inputs))
            fla_both = measure(partial(train_step, theirs, leaves, dy))
        log.info(
            f"{H:>3}{T:>6}{B:>3}  {fwd:>8.3f}{B * T / fwd / 1e3:>8.1f}"
            f"{fmt(fla_fwd, 9, '.3f')}{fmt(ratio(fwd, fla_fwd), 9, '.2f')}"
            f"  {both:>8.3f}{fmt(fla_both, 8, '.3f')}{fmt(ratio(both, fla_both), 9, '.2f')}"
        )
    if plan.device.type == "cuda":
        torch.cuda.empty_cache()


def time_sweep(plan: Plan) -> None:
    """Forward time for every chunk size and value-block size, to tune the defaults."""
    from rwkv7_provider.kernels.triton_chunk import chunk_fwd

    measure = make_timer(plan)
    log.info("\n== forward sweep (ms): rows chunk size, columns value rows per program")
    for H, T, B in plan.sweep:
        inputs, _ = make_inputs(B, T, H, torch.bfloat16, plan.device, with_state=False)
        log.info(f"H={H} T={T} B={B}{'':>4}{'bv=16':>9}{'bv=32':>9}{'bv=64':>9}")
        for chunk in (16, 32):
            row = [measure(partial(chunk_fwd, *inputs, None, chunk=chunk, block_v=bv)) for bv in (16, 32, 64)]
            log.info(f"{'chunk=' + str(chunk):>18}" + "".join(f"{ms:>9.3f}" for ms in row))


def decode_cycle(decode_, step: list[torch.Tensor], states: list[torch.Tensor]) -> None:
    for s in states:
        decode_(*step, s)


def time_decode(plan: Plan) -> None:
    from rwkv7_provider.kernels import wkv7_reference
    from rwkv7_provider.kernels.triton_ops import wkv7_decode_

    measure = make_timer(plan)
    peak = peak_gbps(plan)
    name = torch.cuda.get_device_name(plan.device) if plan.device.type == "cuda" else "cpu"
    dtype = torch.bfloat16 if plan.device.type == "cuda" else torch.float32
    log.info(
        f"\n== decode step, {str(dtype).removeprefix('torch.')} inputs, fp32 state in place; {name}, "
        f"peak HBM {fmt(peak, 0, '.0f')} GB/s"
    )
    log.info(
        "   us per step over a cycle of state buffers larger than L2; 'graph' = replayed as a CUDA graph\n"
        "   (no launch overhead); bytes = state read + write + inputs + y"
    )
    log.info(
        f"{'B':>4}{'H':>4}  {'eager us':>9}{'graph us':>9}{'GB/s':>8}{'% peak':>8}  {'torch step us':>13}"
    )
    for B, H in plan.decode:
        inputs, _ = make_inputs(B, 1, H, dtype, plan.device, with_state=False)
        step = [t[:, 0].contiguous() for t in inputs]
        state_bytes = B * H * N * N * 4
        n_buf = max(1, min(256, L2_FLUSH_BYTES // state_bytes)) if plan.device.type == "cuda" else 2
        states = [torch.randn(B, H, N, N, device=plan.device) * 0.1 for _ in range(n_buf)]
        cycle = partial(decode_cycle, wkv7_decode_, step, states)
        eager = measure(cycle) / n_buf * 1e3
        graph = None
        if plan.device.type == "cuda":
            cycle()  # compiled and warm before the capture
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                cycle()
            graph = measure(g.replay) / n_buf * 1e3
        moved = 2 * state_bytes + 7 * B * H * N * step[0].element_size()
        gbps = moved / ((graph or eager) * 1e-6) / 1e9
        torch_us = measure(partial(wkv7_reference, *inputs, states[0])) * 1e3
        log.info(
            f"{B:>4}{H:>4}  {eager:>9.2f}{fmt(graph, 9, '.2f')}{gbps:>8.0f}"
            f"{fmt(100 * gbps / peak if peak else None, 8, '.0f')}  {torch_us:>13.1f}"
        )


def fmt(x: float | None, width: int, spec: str) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}{spec}}"


def ratio(ours: float, theirs: float | None) -> float | None:
    return None if theirs is None else ours / theirs


# ---- the whole model -------------------------------------------------------------------------------------


def model_section(plan: Plan) -> None:
    """The model with the Triton WKV: logits against the reference WKV (a check), then tokens/s."""
    try:
        from rwkv7_provider.model import RWKV7, RWKV7Config
    except Exception as exc:  # noqa: BLE001 - another agent's module may not be there yet
        log.info("\n== model skipped: rwkv7_provider.model not importable (%s)", exc)
        return
    measure = make_timer(plan)
    torch.manual_seed(0)
    model = RWKV7(RWKV7Config(**plan.model))
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():  # zero-initialised mixing / LoRA parameters: give the WKV inputs some life
                p.normal_(0.0, 0.1)
    model = model.to(plan.device).eval()
    vocab = plan.model["vocab_size"]
    log.info("\n== model %s", plan.model)

    ids = torch.randint(0, vocab, (2, 40), device=plan.device)
    with torch.no_grad():
        logits = {impl: with_impl(impl, lambda: model(ids)[0]) for impl in ("reference", "triton")}
    err = rel_err(logits["triton"], logits["reference"])
    ok = err <= 1e-3
    log.info(
        f"fp32 logits, Triton WKV vs reference WKV (B=2, T=40): error {err:.2e} (tol 1e-3)"
        f" {'ok' if ok else 'FAIL'}"
    )
    if not ok:
        plan.failures.append(f"model logits: error {err:.2e} > 1e-3")
    fused_decode_check(plan, model)

    if plan.device.type == "cuda":
        model = model.to(torch.bfloat16)
    dtype = str(model.dtype).removeprefix("torch.")
    with torch.no_grad():
        for B, T in plan.model_prefill:
            prefill = partial(model, torch.randint(0, vocab, (B, T), device=plan.device), last_only=True)
            ms = measure(prefill)
            ms_chunk = optional(partial(with_impl, "chunk", partial(measure, prefill)))
            log.info(
                f"prefill {dtype} B={B:<3}T={T:<5} {B * T / ms * 1e3:>10.0f} tok/s  ({ms:.2f} ms; "
                f"with the PyTorch chunked WKV: {fmt(ms_chunk and B * T / ms_chunk * 1e3, 0, '.0f')} tok/s)"
            )
        for B in plan.model_decode:
            _, state = model(torch.randint(0, vocab, (B, 8), device=plan.device), last_only=True)
            step = partial(model, torch.randint(0, vocab, (B, 1), device=plan.device), state, last_only=True)
            ms = measure(step)
            ms_ref = optional(partial(with_impl, "reference", partial(measure, step)))
            log.info(
                f"decode  {dtype} B={B:<3}        {B / ms * 1e3:>10.0f} tok/s  ({ms:.2f} ms per step; "
                f"with the PyTorch WKV step: {fmt(ms_ref and B / ms_ref * 1e3, 0, '.0f')} tok/s)"
            )
            ids = torch.randint(0, vocab, (B,), device=plan.device)
            step = partial(lambda i, s: model.head(model.decode_step(i, s)), ids, state.clone())
            ms = measure(step)
            ms_layers = with_impl("reference", partial(measure, step))
            log.info(
                f"decode_step + head {dtype} B={B:<3}{B / ms * 1e3:>8.0f} tok/s  ({ms:.2f} ms, no CUDA graph; "
                f"the layers' step: {ms_layers:.2f} ms)"
            )


def fused_decode_check(plan: Plan, model) -> None:
    """`gpu_decode`'s fused step against the layers' step (PyTorch WKV) from the same prefilled state, 8 tokens
    of 4 rows, in fp32 and bf16: the hidden states and the whole in-place state (a check)."""
    import copy

    from rwkv7_provider.model import gpu_decode

    vocab = plan.model["vocab_size"]
    for dtype, tol in ((torch.float32, FP32_TOL), (torch.bfloat16, 5e-2)):
        m = copy.deepcopy(model).to(dtype)
        with torch.no_grad():
            _, layers = m(torch.randint(0, vocab, (4, 8), device=plan.device))
            fused, worst = layers.clone(), {}
            for _ in range(8):
                ids = torch.randint(0, vocab, (4,), device=plan.device)
                want = with_impl("reference", partial(m.decode_step, ids, layers))
                got = gpu_decode.decode_step(m, ids, fused)
                for name, a, b in (("hidden", got, want), *zip(("att_x_prev", "wkv", "ffn_x_prev"),
                                                               fused.tensors(), layers.tensors())):
                    worst[name] = max(worst.get(name, 0.0), rel_err(a, b))
        name = max(worst, key=worst.get)
        ok = worst[name] <= tol
        log.info(f"fused decode step vs the layers' step, {str(dtype).removeprefix('torch.')}, 8 tokens x 4 rows: "
                 f"error {worst[name]:.2e} ({name}; tol {tol:g}) {'ok' if ok else 'FAIL'}")
        if not ok:
            plan.failures.append(f"fused decode step {dtype}: error {worst[name]:.2e} in {name} > {tol:g}")


def guard_training(plan: Plan) -> None:
    """`train-guard --device cuda` on a slice of the shipped guard data: the same short run in fp32 and with
    bf16 autocast must both end with a finite loss, within 15% of each other; steps/s of each are reported."""
    if plan.device.type != "cuda":
        log.info("\n== guard training: CUDA only (skipped)")
        return
    import gzip
    import json
    import random
    import tempfile

    try:
        from rwkv7_provider.guard import train as guard_train
        from rwkv7_provider.guard.data import DEFAULT_DATA_DIR
    except ImportError as exc:  # the guard needs tokenizers / safetensors / tqdm, the kernel checks do not
        log.info("\n== guard training: skipped, the package cannot be imported here (%s)", exc)
        return
    log.info("\n== guard training (4 layers x 128, 60 steps, batch 32, on a slice of the shipped data)")
    rng = random.Random(0)
    files = sorted(DEFAULT_DATA_DIR.glob("*.jsonl.gz"))
    lines = [line + "\n" for f in files for line in gzip.decompress(f.read_bytes()).decode().split("\n") if line]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "slice.jsonl"
        data.write_text("".join(rng.sample(lines, 4000)))
        final = {}
        for precision in ("fp32", "bf16"):
            out = Path(tmp) / precision
            t0 = time.perf_counter()
            guard_train.main(["--data-dir", str(data), "--out", str(out), "--heldout", "", "--device", "cuda",
                              "--precision", precision, "--layers", "4", "--width", "128", "--vocab-size", "4096",
                              "--steps", "60", "--warmup", "10", "--augment", "200", "--augment-responses", "200",
                              "--no-eval", "--no-progress"])
            seconds = time.perf_counter() - t0
            final[precision] = json.loads((out / "config.json").read_text())["guard"]["final_loss"]
            log.info(f"{precision}: final loss {final[precision]:.4f}, {seconds:.1f} s for the whole command")
    ok = all(math.isfinite(v) for v in final.values()) and abs(final["bf16"] - final["fp32"]) <= 0.15 * final["fp32"]
    log.info(f"bf16 vs fp32 final loss: {'ok' if ok else 'FAIL'}")
    if not ok:
        plan.failures.append(f"guard training: final losses {final} (bf16 must be finite and within 15% of fp32)")


def optional(fn):
    """A comparison number that may be unavailable (another implementation failing must not stop ours)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        log.info("   (comparison failed: %s: %s)", exc.__class__.__name__, exc)
        return None


def with_impl(impl: str | None, fn):
    """Run `fn` with RWKV7_WKV_IMPL forced to `impl` (the dispatcher's override; None: the default choice)."""
    before = os.environ.get("RWKV7_WKV_IMPL")
    os.environ.pop("RWKV7_WKV_IMPL", None)
    if impl is not None:
        os.environ["RWKV7_WKV_IMPL"] = impl
    try:
        return fn()
    finally:
        if before is None:
            os.environ.pop("RWKV7_WKV_IMPL", None)
        else:
            os.environ["RWKV7_WKV_IMPL"] = before


# ---- the serving engine ----------------------------------------------------------------------------------


def engine_models(plan: Plan, dtype: torch.dtype) -> dict:
    """{name: model}: the random model of the plan's shape and the embedded guard, in `dtype` on the device."""
    from rwkv7_provider.model import RWKV7, RWKV7Config

    from rwkv7_provider.runtime.registry import DEFAULT_MODEL_DIR
    from rwkv7_provider.testing import random_state_dict

    config = RWKV7Config(**plan.engine.shape)
    with torch.device("meta"):
        model = RWKV7(config)
    model.load_state_dict(random_state_dict(config, seed=0), assign=True)
    shape = "0.1b" if plan.engine.shape == MODEL_0_1B else "tiny"
    return {
        shape: model.to(plan.device, dtype).eval().requires_grad_(False),
        "guard": RWKV7.from_pretrained(DEFAULT_MODEL_DIR, dtype=dtype, device=plan.device),
    }


def self_checks(n: int, seed: int) -> list[str]:
    from bench_cache import messages

    from rwkv7_provider.guard.prompts import SELF_CHECK_INPUT

    return [SELF_CHECK_INPUT.replace("{{ user_input }}", m) for m in messages(n, seed)]


async def closed_loop(clients: int, prompts: list[str], call) -> tuple[float, list[float]]:
    """(requests/s, latencies) of `clients` asyncio clients each awaiting `call(prompt)` for its next prompt."""
    todo = iter(prompts)
    latencies: list[float] = []

    async def client() -> None:
        for prompt in todo:
            t0 = time.perf_counter()
            await call(prompt)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return len(latencies) / (time.perf_counter() - t0), latencies


def engine_parity(plan: Plan, tokenizer) -> None:
    """fp32: concurrent requests on a batching engine (CUDA graphs on a GPU) against one-at-a-time requests
    on an eager engine with batch size 1: the same greedy texts and seeded samples, scores within 1e-4."""
    from rwkv7_provider.runtime.engine import Engine

    ep = plan.engine
    prompts = self_checks(ep.parity_prompts, seed=7)
    greedy = {"max_tokens": ep.parity_tokens, "temperature": 0}
    sampled = {"max_tokens": ep.parity_tokens, "temperature": 1.0, "top_p": 0.9, "top_k": 50}
    log.info("\n== engine parity, fp32: %d concurrent prompts x (greedy, seeded, Yes/No score) vs serial",
             len(prompts))
    for name, model in engine_models(plan, torch.float32).items():
        serial = Engine(model, tokenizer, max_batch_size=1, cuda_graphs=False)
        want = [(serial.generate(p, **greedy).text, serial.generate(p, seed=i, **sampled).text,
                 serial.score(p, ["Yes", "No"]).logprobs) for i, p in enumerate(prompts)]
        batched = Engine(model, tokenizer)

        async def one(i: int, p: str, engine=batched):
            return await asyncio.gather(engine.agenerate(p, **greedy), engine.agenerate(p, seed=i, **sampled),
                                        engine.ascore(p, ["Yes", "No"]))

        async def everything(one=one):
            return await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))

        got = asyncio.run(everything())
        texts = sum(g.text != w[0] for (g, _, _), w in zip(got, want))
        samples = sum(s.text != w[1] for (_, s, _), w in zip(got, want))
        worst = max(abs(sc.logprobs[c] - w[2][c]) for (_, _, sc), w in zip(got, want) for c in ("Yes", "No"))
        rows = batched.scheduler.stats.max_decode_rows
        ok = texts == samples == 0 and worst <= 1e-4 and rows > 1
        log.info(f"{name:<6} greedy mismatches {texts}/{len(prompts)}, seeded {samples}/{len(prompts)}, "
                 f"worst |d logprob| {worst:.1e} (tol 1e-4), up to {rows} rows per decode step"
                 f"  {'ok' if ok else 'FAIL'}")
        if not ok:
            plan.failures.append(f"engine parity {name}: {texts} greedy / {samples} seeded mismatches, "
                                 f"worst {worst:.1e}, {rows} rows")


def engine_timing(plan: Plan, tokenizer) -> None:
    from rwkv7_provider.guard.prompts import SELF_CHECK_INPUT
    from rwkv7_provider.runtime.engine import Engine

    ep = plan.engine
    dtype = str(ep.timing_dtype).removeprefix("torch.")
    checks = {c: max(ep.checks, 4 * c) for c in ep.clients}  # every client sends a few
    per_model = 2 + ep.generations + max(ep.clients) + sum(checks.values())
    prompts = iter(self_checks(2 * per_model, seed=8))  # every request a new message: no end-of-prompt hits
    log.info("\n== engine timing, %s (decode: greedy; checks: warm `score` of self-check prompts)", dtype)
    for name, model in engine_models(plan, ep.timing_dtype).items():
        engine = Engine(model, tokenizer, max_batch_size=max(ep.clients + [ep.generations]))
        engine.prewarm_templates([SELF_CHECK_INPUT])
        t0 = time.perf_counter()
        engine.generate("Warm-up.", max_tokens=2)  # the first decode captures the CUDA graphs
        first = time.perf_counter() - t0
        capture = engine.scheduler.decode.capture_seconds
        log.info(f"{name}: first generation {first:.1f} s (CUDA graph capture: {fmt(capture, 0, '.1f')} s)")
        if name != "guard":  # the guard's answers end after a token or two: no decode timing
            for label, eng in (("graphs" if capture else "eager", engine),
                               ("eager", Engine(model, tokenizer, cuda_graphs=False) if capture else None)):
                if eng is None:
                    continue
                tokens = ep.decode_tokens if eng is engine else max(8, ep.decode_tokens // 4)
                stream = eng.stream(next(prompts), max_tokens=tokens, temperature=0)
                next(stream)
                t0 = time.perf_counter()
                rest = sum(1 for _ in stream)
                seconds = time.perf_counter() - t0
                n = stream.generation.completion_tokens - 1
                log.info(f"{name}: decode batch 1 ({label}): {n / seconds:>9.0f} tok/s "
                         f"({1e3 * seconds / max(1, n):.2f} ms/token, {rest} deltas)")

            async def generations(engine=engine):
                calls = [engine.agenerate(next(prompts), max_tokens=ep.generation_tokens, temperature=0)
                         for _ in range(ep.generations)]
                t0 = time.perf_counter()
                done = await asyncio.gather(*calls)
                return sum(g.completion_tokens for g in done), time.perf_counter() - t0

            total, seconds = asyncio.run(generations())
            log.info(f"{name}: {ep.generations} concurrent generations: {total / seconds:>9.0f} tok/s in all "
                     f"({total} tokens in {seconds:.2f} s, up to {engine.scheduler.stats.max_decode_rows} rows)")

        async def check(prompt: str, engine=engine):
            await engine.ascore(prompt, ["Yes", "No"])

        asyncio.run(closed_loop(max(ep.clients), [next(prompts) for _ in range(max(ep.clients))], check))
        for clients in ep.clients:
            rate, lat = asyncio.run(closed_loop(clients, [next(prompts) for _ in range(checks[clients])], check))
            lat.sort()
            log.info(f"{name}: {clients:>3} client(s): {rate:>8.0f} checks/s, p50 {1e3 * lat[len(lat) // 2]:.2f} ms, "
                     f"p99 {1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]:.2f} ms")


def engine_section(plan: Plan) -> None:
    """Parity of the batching engine (a check), then its timings. The WKV is the dispatcher's own choice
    (Triton on a GPU; in the CPU smoke run the PyTorch forms, which are what CPU serving runs)."""
    with_impl(None, partial(engine_checks, plan))


def engine_checks(plan: Plan) -> None:
    from rwkv7_provider.model.tokenizer import load_tokenizer

    from rwkv7_provider.runtime.registry import DEFAULT_MODEL_DIR

    tokenizer = load_tokenizer(DEFAULT_MODEL_DIR / "tokenizer.json")
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 parity means fp32 products
    try:
        engine_parity(plan, tokenizer)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    engine_timing(plan, tokenizer)


# ---- main ------------------------------------------------------------------------------------------------


SECTIONS = ("kernels", "model", "engine")


def setup_logging() -> None:
    """stderr, and $OUT/gpu_check.log when $OUT is set (flushed per line, so a killed run keeps its log)."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if os.environ.get("OUT"):
        handlers.append(logging.FileHandler(Path(os.environ["OUT"]) / "gpu_check.log"))
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=handlers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU with TRITON_INTERPRET=1")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="run these sections only")
    parser.add_argument("--skip-timing", action="store_true", help="kernels: correctness checks only")
    parser.add_argument("--skip-model", action="store_true", help="leave out the whole-model section")
    parser.add_argument("--sweep", action="store_true", help="also time every chunk size / value block")
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions per measurement (median)")
    args = parser.parse_args(argv)
    setup_logging()

    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernel modules are imported
        os.environ.setdefault("RWKV7_WKV_IMPL", "triton")  # CPU tensors would otherwise take the PyTorch path
        plan = smoke_plan()
    elif torch.cuda.is_available():
        plan = gpu_plan(args.reps)
    else:
        log.error("no CUDA device; use --cpu-smoke to exercise this script on CPU")
        return 2
    import_package()
    import triton

    if plan.device.type == "cuda":
        props = torch.cuda.get_device_properties(plan.device)
        device = f"{props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB"
    else:
        device = "CPU, Triton interpreter"
    log.info(f"torch {torch.__version__}, triton {triton.__version__}, {device}")

    t0 = time.perf_counter()
    if "kernels" in args.only:
        guarded(plan, "kernel correctness", counts=True)(lambda: check_kernels(plan))
        if not args.skip_timing:
            guarded(plan, "prefill timing", counts=True)(lambda: time_prefill(plan))
            if args.sweep:
                guarded(plan, "forward sweep", counts=True)(lambda: time_sweep(plan))
            guarded(plan, "decode timing", counts=True)(lambda: time_decode(plan))
    if "model" in args.only and not args.skip_model:
        guarded(plan, "model section", counts=False)(lambda: model_section(plan))
        guarded(plan, "guard training", counts=True)(lambda: guard_training(plan))
    if "engine" in args.only:
        guarded(plan, "engine section", counts=True)(lambda: engine_section(plan))

    log.info("\n%.0f s in all", time.perf_counter() - t0)
    if plan.failures:
        log.error("\nFAILED (%d):\n  %s", len(plan.failures), "\n  ".join(plan.failures))
        return 1
    log.info("\nall correctness checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
