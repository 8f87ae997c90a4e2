"""RWKV-7 ("Goose", x070) in PyTorch: one readable file, parameter names identical to BlinkDL's checkpoints.

The equations are in docs/rwkv7.md. Shapes: B batch, T tokens, C = n_embd, H heads of N = 64.
The WKV recurrence itself lives in `rwkv7_provider.kernels.wkv7` (sequential, chunked or Triton).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..kernels import packed_positions, wkv7
from . import cpu_decode, cpu_kernels, cpu_prefill, gpu_decode, kernel_choice
from .checkpoint import save_pretrained
from .config import RWKV7Config
from .loading import load_model
from .state import RWKV7State
from .threads import off_thread

# log of the decay is -exp(-0.5) * sigmoid(d): the decay stays in (exp(-exp(-0.5)), 1) = (0.545, 1).
LOG_DECAY_SCALE = -math.exp(-0.5)


@dataclass(frozen=True)
class Ragged:
    """Right-padded rows [B, T] packed into one sequence [1, N] of their N real tokens.

    Rows of a serving batch differ in length; padding them all to the longest wastes up to half of a prefill's
    GEMMs. Packed, every per-token op (the GEMMs, most of the work) runs on real tokens only, and the WKV
    recurrence reads the rows packed too (`cu_seqlens`, fla's varlen convention).
    """

    index: torch.Tensor  # [N] positions of the real tokens in the flattened [B * T] batch
    first: torch.Tensor  # [B] packed position of each row's first token
    last: torch.Tensor  # [B] packed position of each row's last token
    cu_seqlens: torch.Tensor  # [B + 1] where each row starts in the packed sequence, then N
    rows: int
    width: int

    @classmethod
    def from_lengths(cls, lengths: torch.Tensor, width: int) -> Ragged:
        last = lengths.cumsum(0) - 1
        cu_seqlens = F.pad(last + 1, (1, 0))
        return cls(packed_positions(lengths, width), last - lengths + 1, last, cu_seqlens, len(lengths), width)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, ...] -> [N, ...]"""
        return x.reshape(self.rows * self.width, *x.shape[2:])[self.index]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[N, ...] -> [B, T, ...], zeros in the padding."""
        out = x.new_zeros(self.rows * self.width, *x.shape[1:]).index_copy(0, self.index, x)
        return out.view(self.rows, self.width, *x.shape[1:])


def shifted(x: torch.Tensor, x_prev: torch.Tensor, ragged: Ragged | None = None) -> torch.Tensor:
    """x[t-1] along T, with x_prev [B, C] standing in for x[-1] (a view when T = 1); for packed rows (x [1, N, C])
    each row's first token takes its own row of x_prev.

    The token-shift mixes are lerp(x, shifted, mix) = x + mix * (x[t-1] - x[t]): one pass, no difference tensor.
    """
    if ragged is not None:
        return torch.cat([x[:, :1], x[:, :-1]], dim=1).index_copy_(1, ragged.first, x_prev.unsqueeze(0))
    if x.shape[1] == 1:
        return x_prev.unsqueeze(1)
    return torch.cat([x_prev.unsqueeze(1), x[:, :-1]], dim=1)


def lora(x: torch.Tensor, down: torch.Tensor, up: torch.Tensor, bias: torch.Tensor | None = None, act=None):
    """bias + act(x @ down) @ up, the bias added inside the second GEMM (no separate pass over [B, T, C]).
    The matrices are used in x's dtype (a compressed model keeps them in bf16)."""
    down, up = down.to(x.dtype), up.to(x.dtype)
    h = x @ down
    if act is not None:
        h = act(h)
    if bias is None:
        return h @ up
    return torch.addmm(bias.view(-1), h.view(-1, h.shape[-1]), up).view(*x.shape[:-1], up.shape[-1])


def head_norm(y: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """norm(y) for y [B, T, H, N] and a GroupNorm of H groups, as a layer norm over each head's N channels plus
    the affine: the same function, but GroupNorm's CPU kernel is slow without spatial dimensions."""
    B, T, H, N = y.shape
    y = F.layer_norm(y.reshape(-1, N), (N,), eps=norm.eps).view(B, T, H * N)
    return torch.addcmul(norm.bias, y, norm.weight)


class TimeMix(nn.Module):
    """The attention-like half of a block: token shift, LoRA-modulated r/w/k/v/a/g, WKV-7, gated output."""

    def __init__(self, config: RWKV7Config, layer_id: int) -> None:
        super().__init__()
        C, H, N = config.n_embd, config.n_head, config.head_size
        self.layer_id, self.n_head, self.head_size = layer_id, H, N

        def vec() -> nn.Parameter:
            return nn.Parameter(torch.zeros(1, 1, C))

        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (vec() for _ in range(6))
        self.w0, self.w1, self.w2 = vec(), nn.Parameter(torch.zeros(C, config.dim_w)), nn.Parameter(torch.zeros(config.dim_w, C))
        self.a0, self.a1, self.a2 = vec(), nn.Parameter(torch.zeros(C, config.dim_a)), nn.Parameter(torch.zeros(config.dim_a, C))
        if layer_id > 0:  # layer 0 defines v_first and has no value residual
            self.v0, self.v1, self.v2 = vec(), nn.Parameter(torch.zeros(C, config.dim_v)), nn.Parameter(torch.zeros(config.dim_v, C))
        self.g1, self.g2 = nn.Parameter(torch.zeros(C, config.dim_g)), nn.Parameter(torch.zeros(config.dim_g, C))
        self.k_k, self.k_a = vec(), vec()
        self.r_k = nn.Parameter(torch.zeros(H, N))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=64e-5)

    def forward(
        self,
        x: torch.Tensor,
        x_prev: torch.Tensor,
        wkv_state: torch.Tensor,
        v_first: torch.Tensor | None,
        ragged: Ragged | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: LN1 output [B, T, C], or packed rows [1, N, C] with `ragged`. Returns (output, new WKV state,
        v_first)."""
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        # the six token-shift interpolations in one op (fewer dispatches on the per-token decode path)
        mixes = torch.cat((self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g)).unsqueeze(1)  # [6,1,1,C]
        xr, xw, xk, xv, xa, xg = torch.lerp(x, shifted(x, x_prev, ragged), mixes).unbind(0)

        r = self.receptance(xr)
        k = self.key(xk)
        v = self.value(xv)
        log_w = LOG_DECAY_SCALE * torch.sigmoid(lora(xw, self.w1, self.w2, self.w0, torch.tanh).float())
        iclr = torch.sigmoid(lora(xa, self.a1, self.a2, self.a0))
        g = lora(xg, self.g1, self.g2, act=torch.sigmoid)

        kk = F.normalize((k * self.k_k).float().view(B, T, H, N), dim=-1, eps=1e-12)
        k = k * torch.addcmul(1 - self.k_a, iclr, self.k_a)  # k * (1 + (iclr - 1) * k_a)
        if self.layer_id == 0:
            v_first = v
        else:
            v = torch.lerp(v, v_first, torch.sigmoid(lora(xv, self.v1, self.v2, self.v0)))

        heads = (B, T, H, N)
        iclr_f = iclr.float().view(heads)
        wkv_in = (r.view(heads), log_w.view(heads), k.view(heads), v.view(heads), -kk, kk * iclr_f)
        y, wkv_state = wkv7(*wkv_in, wkv_state, cu_seqlens=None if ragged is None else ragged.cu_seqlens)
        y = head_norm(y, self.ln_x).view(heads)
        bonus = (r.view(heads) * k.view(heads) * self.r_k).sum(-1, keepdim=True)  # per head: v_t (r_t . k_t r_k)
        y = torch.addcmul(y, bonus, v.view(heads)).view(B, T, C)
        return self.output(y * g), wkv_state, v_first


class ChannelMix(nn.Module):
    """The feed-forward half: token shift, then relu(.)^2 through a 4C hidden layer."""

    def __init__(self, config: RWKV7Config) -> None:
        super().__init__()
        self.x_k = nn.Parameter(torch.zeros(1, 1, config.n_embd))
        self.key = nn.Linear(config.n_embd, config.ffn_dim, bias=False)
        self.value = nn.Linear(config.ffn_dim, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor, ragged: Ragged | None = None) -> torch.Tensor:
        k = torch.lerp(x, shifted(x, x_prev, ragged), self.x_k)
        return self.value(torch.relu(self.key(k)).square())


class Block(nn.Module):
    def __init__(self, config: RWKV7Config, layer_id: int) -> None:
        super().__init__()
        C = config.n_embd
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(C)
        self.ln1 = nn.LayerNorm(C)
        self.ln2 = nn.LayerNorm(C)
        self.att = TimeMix(config, layer_id)
        self.ffn = ChannelMix(config)

    def forward(
        self,
        x: torch.Tensor,
        v_first: torch.Tensor | None,
        att_x_prev: torch.Tensor,
        wkv_state: torch.Tensor,
        ffn_x_prev: torch.Tensor,
        ragged: Ragged | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Returns (x, v_first, (att_x_prev, wkv, ffn_x_prev) after each row's last token); x is [B, T, C], or
        packed rows [1, N, C] with `ragged`."""
        xa = self.ln1(x)
        dx, wkv_state, v_first = self.att(xa, att_x_prev, wkv_state, v_first, ragged)
        x = x + dx
        xf = self.ln2(x)
        x = x + self.ffn(xf, ffn_x_prev, ragged)
        return x, v_first, (_at(xa, ragged), wkv_state, _at(xf, ragged))


def _at(x: torch.Tensor, ragged: Ragged | None) -> torch.Tensor:
    """Each row's value at its last token ([B, C])."""
    return x[:, -1] if ragged is None else x[0, ragged.last]


class RWKV7(nn.Module):
    """The language model. `forward(input_ids, state) -> (logits, new_state)`; the input state is never mutated."""

    def __init__(self, config: RWKV7Config) -> None:
        super().__init__()
        self.config = config
        # nn.Embedding's own init (normal_) on a meta skeleton, as checkpoint loading builds it, imports all of
        # torch._dynamo (~2.5 s of start-up); initialise real tensors only.
        self.emb = nn.Embedding(config.vocab_size, config.n_embd, _weight=torch.empty(config.vocab_size, config.n_embd))
        if not self.emb.weight.is_meta:
            nn.init.normal_(self.emb.weight)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # How `decode_step` runs on CPU: the fused kernels of one instruction set, or plain torch (TORCH);
        # None: the unmeasured default. Set by `kernel_choice.prepare`, which `from_pretrained` runs.
        self.cpu_decode_kernel: cpu_kernels.Kernel | None = None
        # (generation, operands) of `cpu_decode`'s one-op decode step, gathered on first use (see cpu_decode)
        self.cpu_decode_operands: tuple | None = None
        # Whether inference prefill on CPU takes `cpu_prefill`'s fused ops: measured by `kernel_choice.prepare`
        # (False where the readable layers were faster); None: unmeasured, fused where it applies.
        self.cpu_prefill_fused: bool | None = None

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> RWKV7:
        cpu_decode.invalidate()  # `.to()`, `.float()` and friends may put new tensors in place of the weights
        return super()._apply(fn, recurse)

    @property
    def dtype(self) -> torch.dtype:
        return self.emb.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.emb.weight.device

    def zero_state(self, batch: int = 1) -> RWKV7State:
        return RWKV7State.zeros(self.config, batch, dtype=self.dtype, device=self.device)

    @classmethod
    def from_pretrained(
        cls,
        path,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        *,
        quantize: str | None = None,
        compute_dtype: torch.dtype | str | None = None,
    ) -> RWKV7:
        """Load a BlinkDL `.pth` (suffix optional), a `.safetensors` file or a Hugging Face / fla directory.

        dtype None means float32 on CPU and the checkpoint's own dtype elsewhere. `quantize` (CPU only) stores
        the large matrices compressed for fast decoding: None (as in the checkpoint), "bf16", "int8" or "q4"
        (see `quantize.py`); `compute_dtype` is then the dtype of their prefill GEMMs (None: bf16 where the
        CPU has native bf16 and measures it faster, else float32). Fails with `InsufficientMemoryError`
        before reading weights when the model would not fit. A CPU model that decodes through the compiled
        kernels gets them here: built if needed (once per machine, ~20 s, logged), and the fastest measured
        for its shapes on this machine (once, cached; see `kernel_choice`), so no request ever waits for either.
        All of it runs on a short-lived thread, so the caller's thread keeps no OpenMP pool (see `threads.py`).
        """
        return off_thread(_load_prepared, cls, path, dtype, device, quantize, compute_dtype)

    def save_pretrained(self, directory, **kwargs) -> None:
        """Write a Hugging Face / fla style directory: config.json + model.safetensors."""
        save_pretrained(self, directory, **kwargs)

    def check_input(
        self, input_ids: torch.Tensor, state: RWKV7State | None, lengths: torch.Tensor | None = None
    ) -> None:
        """Clear errors for the mistakes a caller can make, before anything reaches torch internals."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
            raise InputError("input_ids must be an integer tensor of shape [B, T]")
        if input_ids.dim() != 2:
            raise InputError(f"input_ids must have shape [B, T], got {tuple(input_ids.shape)}")
        if input_ids.numel() == 0:
            raise InputError("empty input: input_ids has no tokens")
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise InputError(f"token id out of range: ids must lie in [0, {self.config.vocab_size}), got {lo}..{hi}")
        if state is not None and state.batch_size != input_ids.shape[0]:
            raise InputError(f"state has batch {state.batch_size} but input_ids has batch {input_ids.shape[0]}")
        if lengths is not None:
            B, T = input_ids.shape
            if lengths.shape != (B,) or lengths.dtype not in (torch.int64, torch.int32):
                raise InputError(f"lengths must be an integer tensor of shape [{B}], got {tuple(lengths.shape)}")
            if int(lengths.min()) < 1 or int(lengths.max()) > T:
                raise InputError(f"lengths must lie in [1, {T}] (the padded length), got {lengths.tolist()}")

    def forward_hidden(
        self, input_ids: torch.Tensor, state: RWKV7State | None = None, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, RWKV7State]:
        """Final hidden states after ln_out ([B, T, C]) and the new state; the head is left to the caller.

        `lengths` [B]: rows are right-padded to T and row b has lengths[b] real tokens. Each row's new state is
        exactly the state after its own tokens, and positions past a row's length hold zeros. Such rows run
        packed (see `Ragged`): the padding costs no GEMM work.
        """
        self.check_input(input_ids, state, lengths)
        if state is None:
            state = self.zero_state(input_ids.shape[0])
        ragged = None
        if lengths is not None and int(lengths.min()) < input_ids.shape[1]:
            ragged = Ragged.from_lengths(lengths.to(input_ids.device), input_ids.shape[1])
            input_ids = ragged.pack(input_ids).unsqueeze(0)
        x = self.blocks[0].ln0(self.emb(input_ids))
        if cpu_prefill.supported(self, x, state):  # inference on CPU: the same layers with fused ops
            x, state = cpu_prefill.forward_layers(self, x, state, None if ragged is None else ragged.cu_seqlens)
        else:
            x, state = self._layers(x, state, ragged)
        x = self.ln_out(x)
        return (x if ragged is None else ragged.pad(x[0])), state

    def _layers(self, x: torch.Tensor, state: RWKV7State, ragged: Ragged | None) -> tuple[torch.Tensor, RWKV7State]:
        v_first = None
        new = []
        for i, block in enumerate(self.blocks):
            x, v_first, layer_state = block(
                x, v_first, state.att_x_prev[i], state.wkv[i], state.ffn_x_prev[i], ragged
            )
            new.append(layer_state)
        att, wkv, ffn = (torch.stack(parts) for parts in zip(*new))
        return x, RWKV7State(att, wkv, ffn)

    def decode_step(self, input_ids: torch.Tensor, state: RWKV7State) -> torch.Tensor:
        """One token per row (input_ids [B]), updating `state` IN PLACE; returns the hidden states [B, C].

        The serving hot path: no input checks and no host synchronisation, so it can run back to back on an
        accelerator (and be captured as a CUDA graph). The caller owns `state` (never a cached snapshot) and
        validates the ids. A float32 model on CPU takes `cpu_decode`, a model on a GPU `gpu_decode`: the same
        equations with fused kernels.
        """
        if cpu_decode.supported(self, state):
            return cpu_decode.decode_step(self, input_ids, state)
        if gpu_decode.supported(self, state):
            return gpu_decode.decode_step(self, input_ids, state)
        x = self.blocks[0].ln0(self.emb(input_ids.view(-1, 1)))
        v_first = None
        for i, block in enumerate(self.blocks):
            x, v_first, layer_state = block(x, v_first, state.att_x_prev[i], state.wkv[i], state.ffn_x_prev[i])
            for buffer, value in zip((state.att_x_prev[i], state.wkv[i], state.ffn_x_prev[i]), layer_state):
                buffer.copy_(value)
        return self.ln_out(x)[:, 0]

    def forward(
        self, input_ids: torch.Tensor, state: RWKV7State | None = None, *, last_only: bool = False
    ) -> tuple[torch.Tensor, RWKV7State]:
        """Logits float32 [B, T, V] (or [B, 1, V] with last_only, so a long prefill skips T x V of head work).

        One token per row without autograd on CPU (`forward(ids [B, 1], state)`, the `rwkv` package's decoding
        habit) takes the fused decode path of `decode_step`, on a copy of the state: the same results.
        """
        one_token = isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2 and input_ids.shape[1] == 1
        if one_token and not torch.is_grad_enabled() and self.device.type == "cpu":
            self.check_input(input_ids, state)
            new = state.clone() if state is not None else self.zero_state(input_ids.shape[0])
            if cpu_decode.supported(self, new):
                return self.head(cpu_decode.decode_step(self, input_ids[:, 0], new)).float().unsqueeze(1), new
        hidden, state = self.forward_hidden(input_ids, state)
        if last_only:
            hidden = hidden[:, -1:]
        return self.head(hidden).float(), state

    def head_logits(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits of only the vocabulary entries `ids` at `hidden` [n, C] -> [n, len(ids)], float32: the head's
        rows for a few tokens, for scores normalised over a handful of choices (the full head of a 65536-token
        vocabulary is the largest matrix of a small model)."""
        rows = self.head.rows(ids) if hasattr(self.head, "rows") else self.head.weight[ids]
        return F.linear(hidden.to(rows.dtype), rows).float()


def _load_prepared(cls: type[RWKV7], path, dtype: torch.dtype | None, device: torch.device | str,
                   quantize: str | None, compute_dtype: torch.dtype | str | None) -> RWKV7:
    model = load_model(cls, path, dtype=dtype, device=device, quantize=quantize, compute_dtype=compute_dtype)
    kernel_choice.prepare(model)
    return model
