"""RWKV7Config: every dimension of an RWKV-7 model, as read off a checkpoint's tensor shapes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ParameterError


@dataclass(frozen=True)
class RWKV7Config:
    """Shapes of an RWKV-7 (x070) model.

    LoRA ranks differ per released size and are never computed from n_embd: the loaders read them
    from the tensor shapes (dim_w: decay, dim_a: in-context learning rate, dim_v: value residual,
    dim_g: output gate).
    """

    n_layer: int = 12
    n_embd: int = 768
    vocab_size: int = 65536
    head_size: int = 64
    dim_w: int = 64
    dim_a: int = 64
    dim_v: int = 32
    dim_g: int = 128
    ffn_dim: int | None = None  # 4 * n_embd in every released model

    def __post_init__(self) -> None:
        if self.n_embd % self.head_size:
            raise ParameterError(f"n_embd={self.n_embd} is not a multiple of head_size={self.head_size}")
        if self.ffn_dim is None:
            object.__setattr__(self, "ffn_dim", 4 * self.n_embd)

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    def to_dict(self) -> dict:
        return asdict(self)
