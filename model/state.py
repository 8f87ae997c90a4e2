"""RWKV7State: the whole recurrent state of a batch, the thing the prefix cache stores.

Per layer l and batch row b:
    att_x_prev[l, b]  [C]        previous token's LN1 output (time-mix token shift)
    wkv[l, b]         [H, N, N]  WKV matrix, float32 always, S[i, j]: i = value index, j = key index
                                 (BlinkDL / `rwkv` package orientation; fla and HF store the transpose)
    ffn_x_prev[l, b]  [C]        previous token's LN2 output (channel-mix token shift)
Layers are stacked along dim 0 so that cloning, batching and byte counting are single tensor ops.
`v_first` is not state: it is recomputed from layer 0 for every token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from .config import RWKV7Config


@dataclass(frozen=True)
class RWKV7State:
    att_x_prev: torch.Tensor  # [L, B, C]
    wkv: torch.Tensor  # [L, B, H, N, N] float32
    ffn_x_prev: torch.Tensor  # [L, B, C]

    @classmethod
    def zeros(
        cls,
        config: RWKV7Config,
        batch: int = 1,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> RWKV7State:
        """Fresh state; `dtype` applies to the token-shift vectors, the WKV matrix is always float32."""
        L, C, H, N = config.n_layer, config.n_embd, config.n_head, config.head_size
        return cls(
            att_x_prev=torch.zeros(L, batch, C, dtype=dtype, device=device),
            wkv=torch.zeros(L, batch, H, N, N, dtype=torch.float32, device=device),
            ffn_x_prev=torch.zeros(L, batch, C, dtype=dtype, device=device),
        )

    @property
    def batch_size(self) -> int:
        return self.wkv.shape[1]

    @property
    def n_layer(self) -> int:
        return self.wkv.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.att_x_prev, self.wkv, self.ffn_x_prev))

    @property
    def device(self) -> torch.device:
        return self.wkv.device

    def clone(self) -> RWKV7State:
        return RWKV7State(self.att_x_prev.clone(), self.wkv.clone(), self.ffn_x_prev.clone())

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> RWKV7State:
        """Move to a device; `dtype` converts the token-shift vectors only (WKV stays float32)."""
        return RWKV7State(
            self.att_x_prev.to(device=device, dtype=dtype),
            self.wkv.to(device=device),
            self.ffn_x_prev.to(device=device, dtype=dtype),
        )

    def select(self, index: int | list[int] | torch.Tensor) -> RWKV7State:
        """Rows of the batch (an int keeps the batch dimension, with size 1)."""
        if isinstance(index, int):
            index = [index]
        index = torch.as_tensor(index, device=self.device)
        return RWKV7State(*(t.index_select(1, index) for t in (self.att_x_prev, self.wkv, self.ffn_x_prev)))

    def rows(self) -> list[RWKV7State]:
        """Every batch row as a batch-1 state of its own storage (a row kept in a cache must not keep the whole
        batch alive). The index is made on the device once: a per-row index from a list would be a host-to-device
        copy, and a wait, per row on a GPU."""
        index = torch.arange(self.batch_size, device=self.device)
        return [RWKV7State(*(t.index_select(1, index[b : b + 1]) for t in self.tensors()))
                for b in range(self.batch_size)]

    def expand(self, batch: int) -> RWKV7State:
        """Repeat a batch-1 state `batch` times (a shared prompt prefix for several continuations)."""
        if self.batch_size != 1:
            raise InputError(f"expand needs a batch-1 state, got batch {self.batch_size}")
        return RWKV7State(*(t.expand(t.shape[0], batch, *t.shape[2:]).contiguous() for t in self.tensors()))

    @staticmethod
    def cat(states: list[RWKV7State]) -> RWKV7State:
        """Concatenate along the batch."""
        if not states:
            raise InputError("RWKV7State.cat needs at least one state")
        return RWKV7State(*(torch.cat(parts, dim=1) for parts in zip(*(s.tensors() for s in states))))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.att_x_prev, self.wkv, self.ffn_x_prev

    def to_rwkv_list(self, row: int = 0) -> list[torch.Tensor]:
        """One batch row in the `rwkv` package's layout: [att_x_prev, wkv, ffn_x_prev] per layer."""
        out: list[torch.Tensor] = []
        for layer in range(self.n_layer):
            out += [self.att_x_prev[layer, row], self.wkv[layer, row], self.ffn_x_prev[layer, row]]
        return out

    @classmethod
    def from_rwkv_list(cls, tensors: list[torch.Tensor]) -> RWKV7State:
        """Inverse of `to_rwkv_list` (a batch-1 state)."""
        att, wkv, ffn = tensors[0::3], tensors[1::3], tensors[2::3]
        return cls(
            torch.stack(att).unsqueeze(1), torch.stack(wkv).float().unsqueeze(1), torch.stack(ffn).unsqueeze(1)
        )
