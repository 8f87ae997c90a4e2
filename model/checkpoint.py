"""Checkpoint I/O: BlinkDL `.pth`, single `.safetensors` files and Hugging Face / fla-hub directories.

Everything is converted to BlinkDL's key names (the names of `RWKV7`'s parameters), every dimension
is read off tensor shapes, and every failure is a `CheckpointError` that names the problem. A
checkpoint is untrusted input: `.pth` files are read with `torch.load(weights_only=True)`.

Reading is lazy: `open_checkpoint` gives each tensor's name, shape and dtype from the file's header
(safetensors) or a memory map (.pth) and a function that reads that one tensor, so `inspect_checkpoint`
validates a checkpoint without reading its weights and the loader (`loading.py`) converts one tensor at a
time. This module never imports the model class.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError
from .config import RWKV7Config
from .quantize import PackedLinear

log = logging.getLogger(__name__)

# Keys that only older RWKV generations have (RWKV-4/5/6 time-mixing parameters).
OLD_GENERATION_MARKERS = ("att.time_decay", "att.time_faaaa", "att.time_first", "att.time_mix_k", "att.time_maa_x")
LAYER0_UNUSED = ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")

# Hugging Face / fla names -> BlinkDL names (applied to the part after "model.layers.L.").
HF_BLOCK_PARTS = {"attn": "att", "ffn": "ffn", "pre_norm": "ln0", "attn_norm": "ln1", "ffn_norm": "ln2"}
HF_PROJ = {"r_proj": "receptance", "k_proj": "key", "v_proj": "value", "o_proj": "output", "g_norm": "ln_x"}
HF_TOP = {
    "model.embeddings.weight": "emb.weight",
    "model.norm.weight": "ln_out.weight",
    "model.norm.bias": "ln_out.bias",
    "lm_head.weight": "head.weight",
}
HF_LORA = {"lora.0.weight": "1", "lora.2.weight": "2", "lora.2.bias": "0"}
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a checkpoint, known by its header; `read()` loads it (and only it)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    read: Callable[[], torch.Tensor] = field(repr=False)

    @property
    def numel(self) -> int:
        return torch.Size(self.shape).numel()

    def renamed(self, transpose: bool = False, shape: tuple[int, ...] | None = None) -> TensorEntry:
        """The same tensor transposed (a [a, b] matrix read as [b, a]) or reshaped when read."""
        if transpose:
            return TensorEntry(self.shape[::-1], self.dtype, lambda: self.read().t().contiguous())
        if shape is not None and shape != self.shape:
            return TensorEntry(shape, self.dtype, lambda: self.read().reshape(shape))
        return self


@dataclass(frozen=True)
class CheckpointInfo:
    """What `inspect_checkpoint` learns from a checkpoint's headers, without reading its weights."""

    path: Path  # the resolved file or directory
    kind: str  # "pth", "safetensors" or "hf" (a directory)
    config: RWKV7Config
    stored_dtype: torch.dtype  # the dtype of the embedding as stored (bf16 for released checkpoints)
    tensors: dict[str, TensorEntry] = field(repr=False)  # BlinkDL names, shapes as the model expects

    @property
    def n_params(self) -> int:
        return sum(e.numel for e in self.tensors.values())

    @property
    def stored_bytes(self) -> int:
        return sum(e.numel * e.dtype.itemsize for e in self.tensors.values())


def resolve_checkpoint(path: str | Path) -> Path:
    """A file or HF directory for `path`; BlinkDL paths may omit the `.pth` suffix."""
    p = Path(path).expanduser()
    if p.is_dir() or p.is_file():
        return p
    if p.with_name(p.name + ".pth").is_file():
        return p.with_name(p.name + ".pth")
    raise CheckpointError(f"checkpoint not found: {path} (expected a .pth/.safetensors file or a model directory)")


def open_tensors(path: Path) -> dict[str, TensorEntry]:
    """The tensors of one file by header or memory map, with a clear error for anything else."""
    try:
        if path.suffix == ".safetensors":
            handle = safe_open(str(path), framework="pt")
            entries = {}
            for name in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                view = handle.get_slice(name)
                dtype = SAFETENSORS_DTYPES.get(view.get_dtype())
                if dtype is None:
                    raise CheckpointError(f"{path}: tensor {name!r} is {view.get_dtype()}, not floating point weights")
                entries[name] = TensorEntry(tuple(view.get_shape()), dtype, lambda n=name: handle.get_tensor(n))
            return entries
        data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except CheckpointError:
        raise
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, corrupt or not a model file): {e}") from e
    except Exception as e:  # pickle errors for files that are not torch archives, or unsafe pickles
        raise CheckpointError(f"{path} could not be loaded safely as a PyTorch checkpoint: {type(e).__name__}: {e}") from e
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} does not contain a dictionary of tensors (not a model checkpoint)")
    for name, t in data.items():
        if not t.is_floating_point():
            raise CheckpointError(f"{path}: tensor {name!r} is {t.dtype}, not floating point weights")
    return {name: TensorEntry(tuple(t.shape), t.dtype, lambda t=t: t) for name, t in data.items()}


def hf_to_blink(tensors: dict[str, TensorEntry]) -> dict[str, TensorEntry]:
    """Rename a Hugging Face / fla checkpoint to BlinkDL keys (LoRA matrices transposed back when read)."""
    out: dict[str, TensorEntry] = {}
    for name, t in tensors.items():
        if name in HF_TOP:
            out[HF_TOP[name]] = t
            continue
        m = re.fullmatch(r"model\.layers\.(\d+)\.(\w+)\.(.+)", name)
        if not m or m.group(2) not in HF_BLOCK_PARTS:
            raise CheckpointError(f"unexpected tensor {name!r} in a Hugging Face RWKV-7 checkpoint")
        layer, part, rest = m.group(1), HF_BLOCK_PARTS[m.group(2)], m.group(3)
        lora = re.fullmatch(r"([wavg])_lora\.(.+)", rest)
        if lora and lora.group(2) in HF_LORA:
            idx = HF_LORA[lora.group(2)]
            rest, t = f"{lora.group(1)}{idx}", t.renamed(transpose=idx != "0")
        elif part == "att":
            head, _, tail = rest.partition(".")
            rest = f"{HF_PROJ.get(head, head)}{'.' + tail if tail else ''}"
        out[f"blocks.{layer}.{part}.{rest}"] = t
    return out


def blink_to_hf(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `hf_to_blink` (used by `save_pretrained`)."""
    top = {v: k for k, v in HF_TOP.items()}
    parts = {v: k for k, v in HF_BLOCK_PARTS.items()}
    proj = {v: k for k, v in HF_PROJ.items()}
    lora = {v: k for k, v in HF_LORA.items()}
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name in top:
            out[top[name]] = t
            continue
        _, layer, part, rest = name.split(".", 3)
        m = re.fullmatch(r"([wavg])([012])", rest)
        if m:
            rest, t = f"{m.group(1)}_lora.{lora[m.group(2)]}", (t.reshape(-1) if m.group(2) == "0" else t.t())
        elif part == "att":
            head, _, tail = rest.partition(".")
            rest = f"{proj.get(head, head)}{'.' + tail if tail else ''}"
        out[f"model.layers.{layer}.{parts[part]}.{rest}"] = t.contiguous()
    return out


def open_checkpoint(path: str | Path) -> tuple[Path, str, dict[str, TensorEntry]]:
    """(resolved path, kind, lazy tensors under BlinkDL names) of a checkpoint, whatever the format on disk."""
    p = resolve_checkpoint(path)
    if p.is_file():
        tensors = open_tensors(p)
        kind = "safetensors" if p.suffix == ".safetensors" else "pth"
        return p, kind, hf_to_blink(tensors) if any(k.startswith("model.layers.") for k in tensors) else tensors
    config_file = p / "config.json"
    if config_file.is_file():
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise CheckpointError(f"{config_file} is not a valid JSON config: {e}") from e
        if model_type not in (None, "rwkv7"):
            raise CheckpointError(f"{p} holds a {model_type!r} model, not RWKV-7 (config.json model_type)")
    index = p / "model.safetensors.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index: {e}") from e
    else:
        files = [f for f in ("model.safetensors", "pytorch_model.bin") if (p / f).is_file()][:1]
    if not files:
        raise CheckpointError(f"{p} has no model.safetensors or pytorch_model.bin")
    tensors: dict[str, TensorEntry] = {}
    for f in files:
        tensors.update(open_tensors(p / f))
    return p, "hf", hf_to_blink(tensors)


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Validate a checkpoint (format, RWKV generation, names, shapes) from its headers, reading no weights.

    Raises `CheckpointError` naming the problem: a missing path, a file that is not a checkpoint (a text file
    renamed .pth, a truncated archive), a directory without weights, another model family or RWKV generation,
    missing, unexpected or mis-shaped tensors.
    """
    p, kind, tensors = open_checkpoint(path)
    config = infer_config(tensors)
    tensors = check_shapes(tensors, config)
    return CheckpointInfo(p, kind, config, tensors["emb.weight"].dtype, tensors)


def expected_shapes(config: RWKV7Config) -> dict[str, tuple[int, ...]]:
    """Every parameter of an RWKV7 model with this config, BlinkDL names."""
    C, V, H, N, F = config.n_embd, config.vocab_size, config.n_head, config.head_size, config.ffn_dim
    shapes: dict[str, tuple[int, ...]] = {
        "emb.weight": (V, C), "blocks.0.ln0.weight": (C,), "blocks.0.ln0.bias": (C,),
        "ln_out.weight": (C,), "ln_out.bias": (C,), "head.weight": (V, C),
    }
    for i in range(config.n_layer):
        b = f"blocks.{i}."
        for n in ("ln1", "ln2", "att.ln_x"):
            shapes[b + n + ".weight"] = shapes[b + n + ".bias"] = (C,)
        for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "k_k", "k_a"):
            shapes[b + "att." + n] = (1, 1, C)
        loras = [("w", config.dim_w), ("a", config.dim_a), ("g", config.dim_g)] + ([("v", config.dim_v)] if i else [])
        for n, d in loras:
            shapes[b + f"att.{n}1"], shapes[b + f"att.{n}2"] = (C, d), (d, C)
        if i:
            shapes[b + "att.v0"] = (1, 1, C)
        shapes[b + "att.r_k"] = (H, N)
        for n in ("receptance", "key", "value", "output"):
            shapes[b + f"att.{n}.weight"] = (C, C)
        shapes[b + "ffn.x_k"] = (1, 1, C)
        shapes[b + "ffn.key.weight"], shapes[b + "ffn.value.weight"] = (F, C), (C, F)
    return shapes


def infer_config(sd: dict[str, TensorEntry]) -> RWKV7Config:
    """Read every dimension off the tensors' shapes; reject other RWKV generations and non-RWKV files."""
    for key in sd:
        if any(key.endswith(m) or f".{m}" in key for m in OLD_GENERATION_MARKERS):
            raise CheckpointError(
                f"this is an RWKV-4/5/6 checkpoint (it has {key!r}); only RWKV-7 (x070) checkpoints are supported"
            )
    if "emb.weight" not in sd or "blocks.0.att.r_k" not in sd:
        missing = "emb.weight" if "emb.weight" not in sd else "blocks.0.att.r_k"
        raise CheckpointError(f"not an RWKV-7 checkpoint: tensor {missing!r} is missing")
    try:
        head_size = sd["blocks.0.att.r_k"].shape[1]
        vocab_size, n_embd = sd["emb.weight"].shape
        n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        v_key = next((f"blocks.{i}.att.v1" for i in range(1, n_layer) if f"blocks.{i}.att.v1" in sd), None)
        return RWKV7Config(
            n_layer=n_layer,
            n_embd=n_embd,
            vocab_size=vocab_size,
            head_size=head_size,
            dim_w=sd["blocks.0.att.w1"].shape[1],
            dim_a=sd["blocks.0.att.a1"].shape[1],
            dim_v=sd[v_key].shape[1] if v_key else 32,
            dim_g=sd["blocks.0.att.g1"].shape[1],
            ffn_dim=sd["blocks.0.ffn.key.weight"].shape[0],
        )
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"not a complete RWKV-7 checkpoint: cannot read its dimensions ({e})") from e


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def check_shapes(sd: dict[str, TensorEntry], config: RWKV7Config) -> dict[str, TensorEntry]:
    """Check names and shapes against the config. A tensor may differ from its expected shape only by
    size-1 dimensions (formats store vectors as [C] or [1, 1, C]); it is reshaped when read."""
    expected = expected_shapes(config)
    out: dict[str, TensorEntry] = {}
    for name, t in sd.items():
        if name in LAYER0_UNUSED:
            continue  # layer 0 has no value residual; released files may carry unused v0/v1/v2
        if name not in expected:
            raise CheckpointError(f"unexpected tensor {name!r} {tuple(t.shape)} in an RWKV-7 checkpoint")
        shape = expected[name]
        if _squeezed(t.shape) != _squeezed(shape):  # a transposed matrix has the right size, not the right shape
            raise CheckpointError(f"shape mismatch for {name!r}: expected {shape}, got {tuple(t.shape)}")
        out[name] = t.renamed(shape=shape)
    missing = sorted(set(expected) - set(out))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise CheckpointError(f"incomplete RWKV-7 checkpoint: {len(missing)} tensors missing ({shown})")
    return out


def default_dtype(device: torch.device | str, stored: torch.dtype) -> torch.dtype:
    """float32 on CPU (activations and state stay exact there), the stored dtype on accelerators."""
    return torch.float32 if torch.device(device).type == "cpu" else stored


def hf_config(config: RWKV7Config) -> dict:
    """The config.json that fla / transformers expect for an RWKV7ForCausalLM."""
    return {
        "model_type": "rwkv7",
        "architectures": ["RWKV7ForCausalLM"],
        "hidden_size": config.n_embd,
        "num_hidden_layers": config.n_layer,
        "head_dim": config.head_size,
        "num_heads": config.n_head,
        "decay_low_rank_dim": config.dim_w,
        "a_low_rank_dim": config.dim_a,
        "v_low_rank_dim": config.dim_v,
        "gate_low_rank_dim": config.dim_g,
        "intermediate_size": config.ffn_dim,
        "hidden_ratio": config.ffn_dim / config.n_embd,
        "norm_eps": 1e-5,
        "vocab_size": config.vocab_size,
    }


def save_pretrained(model, directory: str | Path, dtype: torch.dtype | None = None, extra_config: dict | None = None):
    """Write config.json + model.safetensors (HF / fla layout, loadable by `RWKV7.from_pretrained`)."""
    if any(isinstance(m, PackedLinear) for m in model.modules()):
        raise CheckpointError("this model holds compressed weights (loaded with quantize=...): save the original checkpoint instead")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.to(dtype) if dtype else v).detach().cpu() for k, v in model.state_dict().items()}
    save_file(blink_to_hf(sd), str(d / "model.safetensors"), metadata={"format": "pt"})
    (d / "model.safetensors").chmod(0o644)  # safetensors writes 0600; a shipped model must be readable
    config = hf_config(model.config) | (extra_config or {})
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")
