"""The dtype names a config, a parameter or an environment variable may use, in one table.

Torch-free at import (settings are built before any model loads); the model layer and the runtime both read it.
"""

from __future__ import annotations

from typing import Any

from .errors import ParameterError

# dtype spellings accepted in configs -> canonical torch name
DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


def canonical_dtype(name: Any) -> str | None:
    """"bf16", "torch.bfloat16", torch.bfloat16 ... -> "bfloat16"; None stays None."""
    if name is None:
        return None
    key = str(name).lower().removeprefix("torch.")
    try:
        return DTYPE_NAMES[key]
    except KeyError:
        raise ParameterError(f"unsupported dtype {name!r}; use one of float32, bfloat16, float16") from None


def torch_dtype(name: Any):  # -> torch.dtype | None
    """The torch dtype for a dtype name (see `canonical_dtype`)."""
    import torch

    canonical = canonical_dtype(name)
    return None if canonical is None else getattr(torch, canonical)
