"""Training utilities for RWKV-7 from scratch or from a checkpoint: initialisation, optimiser, LR schedule,
a seeded loop with checkpoint/resume and a progress bar.

The loop is task-agnostic: the caller supplies `make_batch(step)` (a pure function of the step, so a resumed
run sees exactly the batches the interrupted one would have) and `loss_fn(model, batch) -> (loss, tokens)`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..errors import ParameterError
from .rwkv7 import RWKV7

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"


@torch.no_grad()
def init_weights(model: RWKV7, seed: int) -> None:
    """RWKV-7 initialisation for training from scratch.

    Why each choice: token-shift mixes ramp from "mostly previous token" in the first layer to "mostly current
    token" in the last, and spread across channels, so layers start with different receptive fields; the decay
    bias spans slow to fast channels (a range of memory lengths from step 0); LoRA down-projections start at
    zero and up-projections small, so every data-dependent modulation starts as a constant and grows only as
    useful; the output projections of both halves start at zero, so each block starts as the identity and the
    residual stream is not blown up by depth.
    """
    gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    C, L = cfg.n_embd, cfg.n_layer

    def uniform_(t: torch.Tensor, bound: float) -> None:
        t.copy_((torch.rand(t.shape, generator=gen) * 2 - 1) * bound)

    def orthogonal_(t: torch.Tensor, gain: float) -> None:
        rows, cols = t.shape
        q, _ = torch.linalg.qr(torch.randn(max(rows, cols), min(rows, cols), generator=gen))
        t.copy_((q if rows >= cols else q.T)[:rows, :cols] * gain)

    uniform_(model.emb.weight, 1e-4)  # ln0 rescales it; tiny values keep early updates in the embedding's scale
    uniform_(model.head.weight, 0.5 / math.sqrt(C))
    channel = torch.arange(C, dtype=torch.float32) / C  # 0 .. 1 across channels
    for i, block in enumerate(model.blocks):
        depth = i / max(L - 1, 1)  # 0 in the first layer, 1 in the last
        shallow = 1.0 - i / L  # 1 in the first layer, near 0 in the last
        att, ffn = block.att, block.ffn
        for name, power in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
            getattr(att, name).copy_((1.0 - channel.pow(power * shallow)).view(1, 1, C))
        ffn.x_k.copy_((1.0 - channel.pow(shallow**4)).view(1, 1, C))
        # decay logit: slow channels (about -6.5, log decay ~ -1e-3) to fast ones (about -1.5, ~ -0.1)
        spread = torch.arange(C, dtype=torch.float32) / max(C - 1, 1)
        att.w0.copy_((-7.0 + 5.0 * spread.pow(0.85 + depth**0.5) + 0.5).view(1, 1, C))
        att.a0.zero_()
        att.k_k.fill_(0.85)
        att.k_a.fill_(1.0)
        att.r_k.fill_(-0.04)
        loras = [("w", att.w1, att.w2), ("a", att.a1, att.a2), ("g", att.g1, att.g2)]
        if i > 0:
            att.v0.fill_(1.0)
            loras.append(("v", att.v1, att.v2))
        for _, down, up in loras:
            down.zero_()
            orthogonal_(up, 0.1)
        uniform_(att.receptance.weight, 0.5 / math.sqrt(C))
        uniform_(att.key.weight, 0.05 / math.sqrt(C))
        uniform_(att.value.weight, 0.5 / math.sqrt(C))
        att.output.weight.zero_()
        att.ln_x.weight.fill_(((1 + i) / L) ** 0.7)
        att.ln_x.bias.zero_()
        uniform_(ffn.key.weight, 0.5 / math.sqrt(C))
        ffn.value.weight.zero_()
        for ln in (block.ln1, block.ln2) + ((block.ln0,) if i == 0 else ()):
            ln.weight.fill_(1.0)
            ln.bias.zero_()
    model.ln_out.weight.fill_(1.0)
    model.ln_out.bias.zero_()


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not on the embedding, vectors or norms)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and not name.startswith("emb.") else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), eps=1e-8)


def lr_at(step: int, total: int, peak: float, warmup: int, final_ratio: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to `final_ratio * peak` at `total` steps."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainConfig:
    steps: int
    lr: float = 2e-3
    warmup: int = 100
    final_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    checkpoint_every: int = 200
    seed: int = 0


SMOOTHING = 50  # steps the reported loss is averaged over


@dataclass
class TrainLog:
    """What a run reports, carried across resumes by the checkpoint: the loss of the last `SMOOTHING` steps
    and the seconds spent in the training loop (a resumed run's card then describes the whole run)."""

    recent: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def final_loss(self) -> float | None:
        return sum(self.recent) / len(self.recent) if self.recent else None

    def add(self, loss: float) -> None:
        self.recent = (self.recent + [loss])[-SMOOTHING:]


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int, extra: dict,
                    history: TrainLog) -> None:
    """Everything a resumed run needs; written to a temporary file first so a kill never leaves half a file."""
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "torch_rng": torch.get_rng_state(),
            "extra": extra,
            "log": asdict(history),
        },
        tmp,
    )
    tmp.replace(path)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, dict, TrainLog]:
    """Restore model, optimiser and RNG; returns (next step, extra, the log so far)."""
    data = torch.load(path, map_location="cpu", weights_only=True)  # tensors, numbers and strings only
    model.load_state_dict(data["model"])
    optimizer.load_state_dict(data["optimizer"])
    torch.set_rng_state(data["torch_rng"])
    return int(data["step"]), data["extra"], TrainLog(**data.get("log", {}))


def train(
    model: nn.Module,
    make_batch: Callable[[int], Any],
    loss_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, int]],
    config: TrainConfig,
    out_dir: Path,
    *,
    extra: dict | None = None,
    progress: bool = True,
) -> TrainLog:
    """Run (or resume) training; returns the run's log (its last losses and loop time, resumes included).

    A `checkpoint.pt` in `out_dir` is resumed from when it was written with the same `extra` settings;
    one written with different settings is an error rather than a silent mix of two runs.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {}, train_config=asdict(config))
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    ckpt = out_dir / CHECKPOINT_FILE
    start, history = 0, TrainLog()
    if ckpt.is_file():
        start, saved, history = load_checkpoint(ckpt, model, optimizer)
        if saved != extra:
            raise ParameterError(f"{ckpt} belongs to a run with other settings; remove it or use another --out")
        log.info("resuming from %s at step %d", ckpt, start)
    else:
        torch.manual_seed(config.seed)
    model.train()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, disable=not progress, unit="step")
    tokens, t0, seconds_before = 0, time.perf_counter(), history.seconds
    for step in bar:
        lr = lr_at(step, config.steps, config.lr, config.warmup, config.final_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, n_tokens = loss_fn(model, make_batch(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        value = loss.item()
        history.add(value)
        history.seconds = seconds_before + time.perf_counter() - t0
        tokens += n_tokens
        smooth = history.final_loss
        bar.set_postfix(loss=f"{smooth:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens / (time.perf_counter() - t0):.0f}")
        if (step + 1) % 50 == 0:
            log.info("step %d loss %.4f (avg %.4f) grad-norm %.2f lr %.2e tok/s %.0f", step + 1, value, smooth,
                     norm, lr, tokens / (time.perf_counter() - t0))
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            save_checkpoint(ckpt, model, optimizer, step + 1, extra, history)
    model.eval()
    return history
