"""RWKV-7 in PyTorch: config, model, state, checkpoint loading and tokenizers."""

from ..errors import CheckpointError, InsufficientMemoryError
from .checkpoint import CheckpointInfo, inspect_checkpoint
from .config import RWKV7Config
from .loading import MemoryEstimate, estimate_memory
from .rwkv7 import RWKV7
from .state import RWKV7State

__all__ = [
    "RWKV7",
    "CheckpointError",
    "CheckpointInfo",
    "InsufficientMemoryError",
    "MemoryEstimate",
    "RWKV7Config",
    "RWKV7State",
    "estimate_memory",
    "inspect_checkpoint",
]
