"""RWKV-7 in PyTorch: config, model, state, checkpoint loading and tokenizers."""

from .checkpoint import CheckpointError
from .config import RWKV7Config
from .rwkv7 import RWKV7
from .state import RWKV7State

__all__ = ["RWKV7", "CheckpointError", "RWKV7Config", "RWKV7State"]
