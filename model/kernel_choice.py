"""Which code runs each CPU op of a model, chosen by measuring the candidates on this machine.

Why measure instead of reading CPU flags: the fastest differs between CPUs that report the same flags. On an
Intel Xeon with AVX-512 the AVX-512 path decoded at 0.77x the AVX2 path and below plain torch; on this
Zen 4 the two are within ~10% and the best number of GEMV row streams differs by shape. Flags tell what
can run, a measurement what is fastest.

What `prepare(model)` measures, on the model's own weights (its real shapes and memory traffic):
1. Every GEMV group (the model's matrices of one format and shape, e.g. the 48 r/k/v/o of a 0.1B model, or
   the head) under every candidate: plain torch (float32 only) and each instruction set the CPU runs with
   1, 2, 4 or 8 row streams, for int8 weights each also with int16 activations (`Kernel.a16`: on an AVX2-only
   Zen 4 it decoded a 0.1B int8 model 1.1x as fast with 2 threads and 1.2x with 1); then each instruction
   set's best candidate again beside software prefetch distances (PREFETCH). A timing is one pass over the group's matrices (up to GROUP_BYTES of them: more
   than a last-level cache, as in a decode step), best of ROUNDS interleaved rounds, so a busy moment of a
   shared machine hits every candidate alike; candidates slower than 2x the best after the first round drop.
2. Whole decode steps (+ head) with each instruction set and its best GEMVs, on torch's threads and in the
   calling thread alone, with each group's fastest GEMV whatever its instruction set ("mixed"), and, for a
   float32 model, plain torch's general path: this catches what a GEMV alone
   misses (a CPU that clocks down while running AVX-512 runs the rest of the step slower too; parallel
   regions that wait for a thread descheduled by other processes). The fastest decode step wins, so the
   choice is never slower than plain torch as measured; a one-thread plan must win by SERIAL_MARGIN.
3. The GEMM of many rows (prefill, scoring, batched checks) of every float32 group but the head: torch's
   `F.linear` (MKL's sgemm in the x86 wheels) against oneDNN's (`cpu_kernels.gemm`), on one of the group's
   matrices at GEMM_ROWS rows, best of ROUNDS interleaved rounds. MKL's path is not the fastest on every CPU
   (on one Zen 4 oneDNN took 3-27% less time per row); the head is left to torch, as it multiplies many rows only
   when every position's logits are asked for.
4. The prefill of a warm check's new tokens (PREFILL_TOKENS, with those GEMMs) through the fused CPU prefill
   (`cpu_prefill`) against the readable layers, best of ROUNDS interleaved rounds: the fused path is kept only
   where it is not slower (on one Zen 4 it took 0.6-0.95x the time), and not at all where plain torch won
   decode.

The choices are cached in `choices.json` beside the built library, keyed by CPU, flags, threads and the model's
shapes, and reported in one log line with its timings (`last_report()` returns it, for benchmarks).
`RWKV7_CPU_ISA` forces one instruction set instead (tests); `rwkv7-provider build-kernels --checkpoint`
measures again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from . import cpu_decode, cpu_kernels
from .cpu_features import cpu_features
from .cpu_kernels import ONEDNN, TORCH, Kernel
from .kernel_build import UnsafeKernelDir, check_private
from .quantize import FORMATS, GemvLinear, gemv_operands

log = logging.getLogger(__name__)

ROUNDS = 4
PREFETCH = (256, 1024)  # bytes ahead; tried with each instruction set's best stream count
GROUP_BYTES = 128 << 20  # weights timed per GEMV pass: above any last-level cache here
GEMM_ROWS = (32, 256)  # a warm check's new tokens, a prefill chunk: each backend timed at both, summed per row
PREFILL_TOKENS = 24  # a short warm check's new tokens: where the fused prefill's saved dispatches weigh most
STEP_ROUND_SECONDS = 0.02  # decode tokens per round: enough for about this long (tiny models run several)
# A one-thread decode plan gives up the other cores, and the choice is cached for good: it wins only when this
# much faster than the same instruction set on torch's threads. Under real contention it wins by 2-6x; a brief
# disturbance while measuring made it win by 8% on a quiet Zen 4 whose threaded plan then decoded 20% faster.
SERIAL_MARGIN = 1.15
CHOICES_FILE = "choices.json"
PREFILL_PATHS = {True: "fused", False: "readable"}  # how the choice names cpu_prefill on / off
FORMAT_NAMES = {cpu_kernels.F32: "f32", **{code: name for name, code in FORMATS.items()}}
_last_report = ""
_last_cached = False


@dataclass(frozen=True)
class Group:
    """The model's GEMV matrices of one format and shape."""

    fmt: int
    rows: int  # N
    cols: int  # K
    layers: tuple[nn.Module, ...]

    @property
    def name(self) -> str:
        return f"{FORMAT_NAMES[self.fmt]} {self.rows}x{self.cols}" + (f" x{len(self.layers)}" if len(self.layers) > 1 else "")

    def operands(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return gemv_operands(layer)[1]


def gemv_groups(model: nn.Module) -> list[Group]:
    """The layers that decode through the GEMV: packed ones and bias-free contiguous float32 Linears on CPU."""
    found: dict[tuple[int, int, int], list[nn.Module]] = {}
    for layer in model.modules():
        if (gemv := gemv_operands(layer)) is not None:
            found.setdefault((gemv[0], layer.out_features, layer.in_features), []).append(layer)
    return [Group(*key, tuple(layers)) for key, layers in sorted(found.items())]


def gemm_groups(model: nn.Module, groups: list[Group]) -> list[Group]:
    """The float32 groups whose many-row products have a choice of GEMM: all but the head's."""
    head = getattr(model, "head", None)
    return [g for g in groups if g.fmt == cpu_kernels.F32 and head not in g.layers
            and all(isinstance(layer, GemvLinear) for layer in g.layers)]


def assign(model: nn.Module, groups: list[Group], decode: Kernel, gemv: dict[str, Kernel],
           gemm: dict[str, str] | None = None, prefill_fused: bool | None = None) -> None:
    """Give the model its decode kernel, every GEMV layer its kernel and, where given, its GEMM (by group name)
    and whether its prefill takes the fused path."""
    model.cpu_decode_kernel = decode
    if prefill_fused is not None:
        model.cpu_prefill_fused = prefill_fused
    cpu_decode.invalidate()  # the kept decode_layers_ plan names the kernels
    for group in groups:
        for layer in group.layers:
            layer.kernel = gemv[group.name]
            if gemm and group.name in gemm:
                layer.gemm = gemm[group.name]


def last_report() -> str:
    """The log line of the last `prepare` in this process ("" if none)."""
    return _last_report


def last_was_cached() -> bool:
    """Whether the last `prepare` applied a cached measurement instead of measuring."""
    return _last_cached


def prepare(model: nn.Module, measure_again: bool = False) -> None:
    """Build the kernels (if needed) and give a CPU model the fastest kernels for its shapes on this machine,
    measured once per machine, thread count and shapes (cached; `measure_again` ignores the cache). Does
    nothing for a model that does not use them (on a GPU, or bfloat16 without compression) or where they are
    unavailable."""
    groups = gemv_groups(model)
    if not groups or not cpu_kernels.available():
        return
    forced = cpu_kernels.forced_isa()
    if forced:
        assign(model, groups, Kernel(forced), {g.name: Kernel(forced) for g in groups},
               {g.name: TORCH for g in gemm_groups(model, groups)}, prefill_fused=True)
        _report(f"CPU kernels forced by RWKV7_CPU_ISA={forced}", cached=False)
        return
    key = _cache_key(model, groups)
    cached = None if measure_again else _read_choices().get(key)
    if cached and _apply_cached(model, groups, cached):
        _report(f"CPU kernels (measured before, cached): {cached['report']}", cached=True)
        return
    t0 = time.perf_counter()
    decode, gemv, report = _measure(model, groups)
    gemm, gemm_report = _measure_gemm(gemm_groups(model, groups))
    assign(model, groups, decode, gemv, gemm)
    fused, prefill_report = _measure_prefill(model)
    model.cpu_prefill_fused = fused
    threads = torch.get_num_threads()
    parts = "; ".join(filter(None, (report, gemm_report, prefill_report)))
    report = f"{cpu_features().name}, {threads} thread{'s' * (threads > 1)}: {parts}"
    _write_choice(key, {"decode": str(decode), "gemv": {name: str(k) for name, k in gemv.items()}, "gemm": gemm,
                        "prefill": PREFILL_PATHS[fused], "report": report})
    _report(f"CPU kernels measured in {time.perf_counter() - t0:.1f} s on {report}", cached=False)


def _report(line: str, cached: bool) -> None:
    global _last_report, _last_cached
    _last_report, _last_cached = line, cached
    log.info("%s", line)


# ---------------------------------------------------------------- measuring


def _best_of_rounds(candidates: list, run: Callable[[object], float], prune: bool = True) -> dict:
    """{candidate: best seconds} over ROUNDS rounds that each time every remaining candidate once."""
    best = {c: math.inf for c in candidates}
    for round_ in range(ROUNDS):
        for c in list(best):
            best[c] = min(best[c], run(c))
        if prune and round_ == 0:
            fastest = min(best.values())
            best = {c: t for c, t in best.items() if t <= 2 * fastest}
    return best


def _gemv_candidates(fmt: int) -> list[Kernel]:
    out = [Kernel(TORCH)] if fmt == cpu_kernels.F32 else []
    for isa in cpu_kernels.status().isas:
        for a16 in (False, True) if fmt == cpu_kernels.INT8 else (False,):
            streams = cpu_kernels.STREAMS if isa != "portable" else (cpu_kernels.DEFAULT_STREAMS,)
            out += [Kernel(isa, s, a16=a16) for s in streams]
    return out


def _time_group(group: Group) -> dict[Kernel, float]:
    """Seconds of one pass over (a cache-exceeding share of) the group's matrices, per candidate kernel."""
    layers, nbytes = [], 0
    for layer in group.layers:
        layers.append(layer)
        nbytes += sum(t.nbytes for t in group.operands(layer))
        if nbytes >= GROUP_BYTES:
            break
    share = len(group.layers) / len(layers)  # scale to the whole group
    x = torch.randn(1, group.cols, generator=torch.Generator().manual_seed(0))
    operands = [group.operands(layer) for layer in layers]

    def run(kernel: Kernel) -> float:
        t0 = time.perf_counter()
        for w, s, m in operands:
            cpu_kernels.gemv(x, w, s, m, group.fmt, kernel)
        return (time.perf_counter() - t0) * share

    times = _best_of_rounds(_gemv_candidates(group.fmt), run)
    retry = []
    for isa in {k.isa for k in times} - {TORCH, "portable"}:
        best = min((k for k in times if k.isa == isa), key=times.get)
        retry += [best, *(replace(best, prefetch=pf) for pf in PREFETCH)]
    return {**times, **_best_of_rounds(retry, run, prune=False)} if retry else times


def _time_decode(model: nn.Module, groups: list[Group], plans: dict[str, tuple[Kernel, dict[str, Kernel]]]) -> dict[str, float]:
    """Seconds per decode token (step + head, batch 1) under each plan, interleaved."""
    state = model.zero_state(1)
    token = torch.tensor([1])

    def step() -> None:
        model.head(model.decode_step(token, state))

    tokens: dict[str, int] = {}
    for name, (decode, gemv) in plans.items():  # warm-up, and how many tokens make a round long enough
        assign(model, groups, decode, gemv)
        t0 = time.perf_counter()
        step()
        tokens[name] = max(1, min(64, int(STEP_ROUND_SECONDS / max(time.perf_counter() - t0, 1e-6))))

    def run(name: str) -> float:
        assign(model, groups, *plans[name])
        t0 = time.perf_counter()
        for _ in range(tokens[name]):
            step()
        return (time.perf_counter() - t0) / tokens[name]

    return _best_of_rounds(list(plans), run, prune=False)


def _measure_gemm(groups: list[Group]) -> tuple[dict[str, str], str]:
    """({group name: GEMM backend}, the report) of each group's faster many-row product (TORCH without oneDNN)."""
    if not groups or not cpu_kernels.onednn_available():
        return {g.name: TORCH for g in groups}, ""
    choice, parts = {}, []
    with torch.inference_mode():
        for group in groups:
            w = group.layers[0].weight
            xs = [torch.randn(m, group.cols, generator=torch.Generator().manual_seed(0)) for m in GEMM_ROWS]

            def run(backend: str, w: torch.Tensor = w, xs: list[torch.Tensor] = xs) -> float:
                total = 0.0
                for x in xs:
                    t0 = time.perf_counter()
                    cpu_kernels.gemm(x, w, backend)
                    total += (time.perf_counter() - t0) / x.shape[0]
                return total

            try:
                times = _best_of_rounds([TORCH, ONEDNN], run, prune=False)
            except RuntimeError as e:  # a private op that refuses this shape or build: torch's own is used
                choice[group.name] = TORCH
                parts.append(f"GEMM {group.name} torch (oneDNN failed: {str(e).strip()[:200]})")
                continue
            best = choice[group.name] = min(times, key=times.get)
            other = ", ".join(f"{b} {1e6 * t:.1f}" for b, t in times.items() if b != best)
            parts.append(f"GEMM {group.name} {best} {1e6 * times[best]:.1f} us/row ({other})")
    return choice, "; ".join(parts)


def _time_prefill(model: nn.Module) -> dict[bool, float]:
    """Seconds of a PREFILL_TOKENS-token forward from a state, fused (True) and through the readable layers."""
    ids = torch.randint(1, model.config.vocab_size, (1, PREFILL_TOKENS), generator=torch.Generator().manual_seed(0))
    state = model.zero_state(1)

    def run(fused: bool) -> float:
        model.cpu_prefill_fused = fused
        t0 = time.perf_counter()
        model.forward_hidden(ids, state)
        return time.perf_counter() - t0

    return _best_of_rounds([True, False], run, prune=False)


def _measure_prefill(model: nn.Module) -> tuple[bool, str]:
    """(whether the fused prefill is kept, the report): kept unless the readable layers measure faster; not
    measured where the fused ops do not run (plain torch won decode, or a head size over 64)."""
    if not cpu_decode.fused_ops_apply(model):
        return False, ""
    with torch.inference_mode():
        times = _time_prefill(model)
    fused = times[True] <= times[False]
    return fused, (f"prefill {PREFILL_TOKENS} tokens {PREFILL_PATHS[fused]} {1e3 * times[fused]:.2f} ms "
                   f"({PREFILL_PATHS[not fused]} {1e3 * times[not fused]:.2f})")


def _fastest(times: dict[Kernel, float], isas: tuple[str, ...]) -> Kernel:
    """The fastest timed kernel of these instruction sets (all pruned: the first one's default)."""
    allowed = [k for k in times if k.isa in isas]
    return min(allowed, key=times.get) if allowed else Kernel(isas[0])


def _measure(model: nn.Module, groups: list[Group]) -> tuple[Kernel, dict[str, Kernel], str]:
    """(decode kernel, GEMV kernel per group, the report) of the fastest measured decode step."""
    with torch.inference_mode():
        gemv_times = {g.name: _time_group(g) for g in groups}
        isas = [i for i in cpu_kernels.status().isas if i != "portable"] or ["portable"]
        plans: dict[str, tuple[Kernel, dict[str, Kernel]]] = {}
        for isa in isas:  # each instruction set with its fastest GEMVs (plain torch where that is faster)
            gemv = {name: _fastest(times, (isa, TORCH)) for name, times in gemv_times.items()}
            plans[isa] = (Kernel(isa), gemv)
            if torch.get_num_threads() > 1:  # and all of its ops in the calling thread alone
                plans[f"{isa}+serial"] = (Kernel(isa, serial=True),
                                          {name: k if k.isa == TORCH else replace(k, serial=True) for name, k in gemv.items()})
        mixed = {name: _fastest(times, (*isas, TORCH)) for name, times in gemv_times.items()}
        if all(mixed != gemv for _, gemv in plans.values()):  # each group's fastest, whatever its instruction set
            plans["mixed"] = (Kernel(isas[-1]), mixed)
        if all(g.fmt == cpu_kernels.F32 for g in groups):  # compressed weights have no plain-torch decode
            plans[TORCH] = (Kernel(TORCH), {g.name: Kernel(TORCH) for g in groups})
        step_times = _time_decode(model, groups, plans) if len(plans) > 1 else {next(iter(plans)): math.nan}
    winner = _winner(step_times)
    decode, gemv = plans[winner]
    others = ", ".join(f"{n} {1e3 * t:.2f}" for n, t in step_times.items() if n != winner)
    parts = [f"decode {winner} {1e3 * step_times[winner]:.2f} ms/token" + (f" ({others})" if others else "")]
    for name, times in gemv_times.items():
        chosen = gemv[name]
        rest = sorted(((t, k) for k, t in times.items() if k != chosen), key=lambda pair: pair[0])
        timed = times.get(chosen, times.get(replace(chosen, serial=False)))  # serial: timed threaded
        others = ", ".join(f"{k} {1e3 * t:.3f}" for t, k in rest[:4])
        parts.append(f"GEMV {name} {chosen} " + (f"{1e3 * timed:.3f} ms" if timed else "(dropped after round 1)")
                     + (f" ({others})" if others else ""))
    return decode, gemv, "; ".join(parts)


def _winner(step_times: dict[str, float]) -> str:
    """The fastest plan, except that a "+serial" plan must beat its threaded twin by SERIAL_MARGIN."""
    winner = min(step_times, key=step_times.get)
    threaded = winner.removesuffix("+serial")
    if threaded != winner and step_times.get(threaded, math.inf) <= SERIAL_MARGIN * step_times[winner]:
        return threaded
    return winner


# ---------------------------------------------------------------- the cache beside the library


def _cache_key(model: nn.Module, groups: list[Group]) -> str:
    cpu = cpu_features()
    facts = [cpu.name, sorted(cpu.flags), torch.get_num_threads(), str(model.config), [g.name for g in groups]]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:20]


def _choices_path() -> Path:
    return cpu_kernels.status().path.parent / CHOICES_FILE


def _read_choices() -> dict:
    path = _choices_path()
    try:
        check_private(path)
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnsafeKernelDir) as e:
        log.warning("ignoring the cached kernel choices %s: %s", path, e)
        return {}


def _write_choice(key: str, choice: dict) -> None:
    path = _choices_path()
    choices = {**_read_choices(), key: choice}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(choices, indent=1))
        os.replace(tmp, path)
    except OSError as e:  # a read-only cache (built ahead by another user): measured again next time
        tmp.unlink(missing_ok=True)
        log.info("not caching the kernel choice in %s: %s", path, e)


def _parse(text: str) -> Kernel | None:
    """A Kernel from its str() ("torch", "avx2/4", "avx2/4+a16", "avx512/2+pf256+serial"), or None if it does
    not run here."""
    name, *options = text.split("+")
    isa, _, streams = name.partition("/")
    if isa != TORCH and isa not in cpu_kernels.status().isas:
        return None
    prefetch = [o.removeprefix("pf") for o in options if o.startswith("pf")]
    if set(options) - {"serial", "a16", *(f"pf{p}" for p in prefetch)} or len(prefetch) > 1:
        return None
    try:
        kernel = Kernel(isa, int(streams or cpu_kernels.DEFAULT_STREAMS), int(prefetch[0]) if prefetch else 0,
                        "serial" in options, "a16" in options)
    except ValueError:
        return None
    return kernel if kernel.streams in cpu_kernels.STREAMS and 0 <= kernel.prefetch <= 8192 else None


def _apply_cached(model: nn.Module, groups: list[Group], cached: dict) -> bool:
    """Apply a cached choice if it is complete and every kernel in it runs here."""
    try:
        decode = _parse(cached["decode"])
        gemv = {g.name: _parse(cached["gemv"][g.name]) for g in groups}
        gemm = {g.name: cached["gemm"][g.name] for g in gemm_groups(model, groups)}
        fused = {name: f for f, name in PREFILL_PATHS.items()}.get(cached["prefill"])
    except (KeyError, TypeError, AttributeError):
        return False
    backends = (TORCH, ONEDNN) if cpu_kernels.onednn_available() else (TORCH,)
    if decode is None or None in gemv.values() or any(b not in backends for b in gemm.values()) or fused is None:
        return False
    if any(gemv[g.name].a16 and g.fmt != cpu_kernels.INT8 for g in groups):  # a16 runs int8 weights only
        return False
    assign(model, groups, decode, gemv, gemm, fused)
    return True
