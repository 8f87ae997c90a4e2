"""Prefix state cache: a radix tree over token ids whose nodes may hold recurrent-state snapshots.

RWKV-7's state after a prefix is a fixed-size tensor, so "resume after this prefix" costs one lookup and
no recomputation. The tree records the token path of every prompt it has seen (a few bytes per token) and
holds snapshots at some of its nodes (megabytes each). `lookup` returns both the deepest snapshot on a
prompt's path and how far the prompt follows any recorded path: the engine uses the second to store a
snapshot where two prompts diverge (the end of a shared template), so the next prompt resumes there.

Rules:
- Snapshots are immutable. The cache hands out references, never copies; nothing may modify them in place
  (the model's forward never mutates its input state).
- Memory is bounded by bytes: snapshot tensors plus `TOKEN_BYTES` per recorded path token. The least
  recently used snapshot (or snapshot-less leaf path) goes first; pinned snapshots (pre-warmed prompt
  prefixes) stay.
- A cache belongs to one model fingerprint and dtype; persisted files carry both and are checked on load.
- Persistence (optional) mirrors memory: a snapshot stored with `persist=True` is written to the directory
  (temp file + `os.replace`, so a reader never sees half a file) and deleted when evicted. Each file carries
  a SHA-256 of its tensors, tokens and model fingerprint; files that fail any check are ignored with a
  warning, never trusted. A filesystem failure (read-only or vanished files, another process evicting the
  same directory) costs only persistence, with a warning: never a request.
- The directory steers the guard's verdicts (a snapshot is the state the answer is computed from), so it
  must be writable only by the service; a group- or world-writable directory is reported with a warning.
  The checksum catches damage and careless edits, not a writer who recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes
from torch import nn

from ..errors import InputError, ParameterError
from ..model import RWKV7State

log = logging.getLogger(__name__)

TOKEN_BYTES = 8  # what one recorded path token is charged against the budget (a pointer in a list)
# A temp file of an atomic write older than this is what a killed writer left behind (a write takes well under
# a second), removed at start-up; a younger one may belong to another process writing into the same directory.
STALE_TMP_SECONDS = 600
TMP_PREFIX, TMP_SUFFIX = ".", ".tmp"
FILE_FORMAT = "rwkv7-prefix-snapshot/2"
TENSOR_NAMES = ("att_x_prev", "wkv", "ffn_x_prev", "hidden")


@dataclass(frozen=True)
class Snapshot:
    """Everything needed to continue after a token prefix.

    `hidden` is the last position's output after ln_out ([C], model dtype) rather than its logits:
    it is 1/85 of the size for a 65k vocabulary, and scoring needs only a few head rows of it.
    """

    state: RWKV7State
    hidden: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.state.nbytes + self.hidden.numel() * self.hidden.element_size()

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(zip(TENSOR_NAMES, (*self.state.tensors(), self.hidden)))


@dataclass(frozen=True)
class Match:
    """Result of a lookup: the deepest snapshot on the path, and how far any recorded path is shared."""

    depth: int  # tokens covered by `snapshot` (0 when there is none)
    snapshot: Snapshot | None
    shared: int  # length of the longest common prefix with any recorded path (>= depth)


@dataclass
class CacheStats:
    """Counters since creation. tokens_computed counts prompt tokens that lookups left to prefill."""

    hits: int = 0
    misses: int = 0
    tokens_reused: int = 0
    tokens_computed: int = 0
    bytes: int = 0
    budget_bytes: int = 0
    snapshots: int = 0
    evictions: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def model_fingerprint(model: nn.Module) -> str:
    """A hash identifying a model's weights, cheap enough for start-up (one reduction pass per tensor).

    Hashes every parameter's name, shape and dtype, its float64 sum and a strided sample of its values:
    two different checkpoints (even fine-tunes of one another) never collide in practice.
    """
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        flat = t.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)].float().cpu()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}:{flat.sum(dtype=torch.float64).item()!r}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class _Node:
    """A radix-tree node: `edge` holds the tokens from its parent to it."""

    __slots__ = ("children", "edge", "parent", "persisted", "pinned", "snapshot")

    def __init__(self, parent: _Node | None, edge: list[int]) -> None:
        self.parent = parent
        self.edge = edge
        self.children: dict[int, _Node] = {}
        self.snapshot: Snapshot | None = None
        self.persisted = False
        self.pinned = False


def snapshot_checksum(tokens: list[int], fingerprint: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over what a persisted snapshot claims: its model, its token path and its tensors' bytes."""
    h = hashlib.sha256(f"{fingerprint}:{json.dumps(tokens)}".encode())
    for name in TENSOR_NAMES:
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _warn_if_shared(directory: Path) -> None:
    """Warn when others than the owner may write where snapshots are read from."""
    try:
        mode = directory.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        log.warning(
            "prefix cache: %s is group- or world-writable; persisted states steer the model's answers, so "
            "make it writable by this service only (chmod go-w)",
            directory,
        )


class PrefixCache:
    """Radix tree of token paths with LRU-evicted state snapshots; thread-safe.

    `expected` gives the shape and dtype every snapshot tensor must have (checked on load from disk).
    `budget_bytes=0` disables the cache: lookups miss, nothing is recorded.
    """

    def __init__(
        self,
        *,
        fingerprint: str,
        dtype: torch.dtype,
        budget_bytes: int,
        expected: dict[str, tuple[tuple[int, ...], torch.dtype]],
        device: torch.device | str = "cpu",
        directory: str | Path | None = None,
        vocab_size: int | None = None,
    ) -> None:
        if budget_bytes < 0:
            raise ParameterError(f"cache budget must be >= 0 bytes, got {budget_bytes}")
        self.fingerprint, self.dtype, self.device = fingerprint, dtype, torch.device(device)
        self.expected, self.vocab_size = expected, vocab_size
        self.directory = (
            Path(directory).expanduser() / f"{fingerprint[:16]}-{dtype_name(dtype)}" if directory else None
        )
        self._lock = threading.Lock()
        self._root = _Node(None, [])
        self._lru: OrderedDict[_Node, None] = OrderedDict()  # every non-root node, least recent first
        self._stats = CacheStats(budget_bytes=budget_bytes)
        if self.directory is not None and budget_bytes:
            _warn_if_shared(self.directory.parent)
            _warn_if_shared(self.directory)
            self._load()

    # ---------------------------------------------------------------- public API

    def lookup(self, tokens: list[int]) -> Match:
        """Deepest snapshot on `tokens`' path and the shared depth; counts a hit or a miss."""
        with self._lock:
            node, depth, best, best_depth = self._root, 0, None, 0
            while depth < len(tokens):
                child = node.children.get(tokens[depth])
                if child is None:
                    break
                common = _common_prefix(child.edge, tokens, depth)
                self._touch(child)
                depth += common
                if common < len(child.edge):
                    break
                node = child
                if node.snapshot is not None:
                    best, best_depth = node.snapshot, depth
            s = self._stats
            s.hits += best is not None
            s.misses += best is None
            s.tokens_reused += best_depth
            s.tokens_computed += len(tokens) - best_depth
            return Match(best_depth, best, depth)

    def insert(self, tokens: list[int], snapshot: Snapshot | None = None, *, persist: bool = False,
               pin: bool = False) -> None:
        """Record `tokens`' path and, if given and it fits, store `snapshot` at its end.

        An existing snapshot at that node is kept (both are the same state); `persist` also writes the
        node's snapshot to the directory, if the cache has one; `pin` keeps it from eviction (pre-warmed
        prompt prefixes: a process that shares the directory and has no traffic for one of them would
        otherwise evict it and delete the file every other process starts warm from).
        """
        if not tokens:
            raise InputError("cannot insert an empty token path")
        with self._lock:
            if not self._stats.budget_bytes:
                return
            node = self._node_at(tokens)
            if snapshot is not None and node.snapshot is None and snapshot.nbytes <= self._stats.budget_bytes:
                node.snapshot = snapshot
                self._stats.bytes += snapshot.nbytes
                self._stats.snapshots += 1
            if persist and node.snapshot is not None and not node.persisted and self.directory is not None:
                node.persisted = self._write(tokens, node.snapshot)
            node.pinned = node.pinned or (pin and node.snapshot is not None)
            self._shrink()

    def clear(self) -> None:
        """Drop every snapshot and path (and their files)."""
        with self._lock:
            for node in list(self._lru):
                self._drop_snapshot(node, evicted=False)
            self._root = _Node(None, [])
            self._lru.clear()
            self._stats.bytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(**asdict(self._stats))

    # ---------------------------------------------------------------- tree

    def _touch(self, node: _Node) -> None:
        self._lru[node] = None
        self._lru.move_to_end(node)

    def _node_at(self, tokens: list[int]) -> _Node:
        """The node at depth len(tokens) on this path, creating and splitting as needed; touches the path."""
        node, depth = self._root, 0
        while depth < len(tokens):
            child = node.children.get(tokens[depth])
            if child is None:
                child = _Node(node, tokens[depth:])
                node.children[tokens[depth]] = child
                self._stats.bytes += TOKEN_BYTES * len(child.edge)
            else:
                common = _common_prefix(child.edge, tokens, depth)
                if common < len(child.edge):
                    child = self._split(child, common)
            self._touch(child)
            depth += len(child.edge)
            node = child
        return node

    def _split(self, node: _Node, at: int) -> _Node:
        """Insert a node `at` tokens down `node`'s edge; returns it (its parent edge is the first part)."""
        parent = node.parent
        middle = _Node(parent, node.edge[:at])
        parent.children[middle.edge[0]] = middle
        node.edge, node.parent = node.edge[at:], middle
        middle.children[node.edge[0]] = node
        self._lru[middle] = None
        return middle

    def _shrink(self) -> None:
        """Evict least recently used snapshots, then snapshot-less leaf paths, until within budget."""
        while self._stats.bytes > self._stats.budget_bytes:
            victim = next((n for n in self._lru if not n.pinned and (n.snapshot is not None or not n.children)), None)
            if victim is None:
                return
            if victim.snapshot is not None:
                self._drop_snapshot(victim, evicted=True)
                self._lru.move_to_end(victim, last=False)  # its bare path is the next candidate
            else:
                self._remove_leaf(victim)

    def _drop_snapshot(self, node: _Node, *, evicted: bool) -> None:
        if node.snapshot is None:
            return
        self._stats.bytes -= node.snapshot.nbytes
        self._stats.snapshots -= 1
        self._stats.evictions += evicted
        node.snapshot = None
        if node.persisted:
            node.persisted = False
            path = self._path_file(self._path_of(node))
            try:
                path.unlink(missing_ok=True)
            except OSError as e:
                log.warning("prefix cache: cannot delete evicted %s: %s", path, e)

    def _remove_leaf(self, node: _Node) -> None:
        parent = node.parent
        del parent.children[node.edge[0]]
        del self._lru[node]
        self._stats.bytes -= TOKEN_BYTES * len(node.edge)
        if parent is not self._root and parent.snapshot is None and len(parent.children) == 1:
            (only,) = parent.children.values()  # merge a now-redundant inner node into its child
            grand = parent.parent
            only.edge, only.parent = parent.edge + only.edge, grand
            grand.children[only.edge[0]] = only
            del self._lru[parent]

    @staticmethod
    def _path_of(node: _Node) -> list[int]:
        parts = []
        while node.parent is not None:
            parts.append(node.edge)
            node = node.parent
        return [t for part in reversed(parts) for t in part]

    # ---------------------------------------------------------------- persistence

    def _path_file(self, tokens: list[int]) -> Path:
        digest = hashlib.sha256(json.dumps(tokens).encode()).hexdigest()[:40]
        return self.directory / f"{digest}.safetensors"

    def _write(self, tokens: list[int], snapshot: Snapshot) -> bool:
        """Atomically write one snapshot; a failure only costs the persistence of this entry."""
        tensors = {k: v.detach().contiguous().cpu() for k, v in snapshot.tensors().items()}
        header = {"format": FILE_FORMAT, "fingerprint": self.fingerprint, "dtype": dtype_name(self.dtype)}
        header["tokens"] = json.dumps(tokens)
        header["sha256"] = snapshot_checksum(tokens, self.fingerprint, tensors)
        data = safetensors_bytes(tensors, metadata=header)
        target = self._path_file(tokens)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=TMP_PREFIX, suffix=TMP_SUFFIX)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as e:
            log.warning("prefix cache: cannot write %s: %s", target, e)
            return False
        return True

    def _load(self) -> None:
        """Read persisted snapshots, newest first while they fit; the newest ends up the most recent."""
        if not self.directory.is_dir():
            return
        self._remove_stale_temp_files()
        dated = []
        try:
            for path in self.directory.glob("*.safetensors"):
                try:
                    dated.append((path.stat().st_mtime, path))
                except OSError:  # evicted by another process since the listing
                    continue
        except OSError as e:
            log.warning("prefix cache: cannot list %s: %s", self.directory, e)
        files = [path for _, path in sorted(dated, reverse=True)]
        kept: list[tuple[list[int], Snapshot]] = []
        size = 0
        for path in files:
            try:
                tokens, snapshot = self._read(path)
            except FileNotFoundError:  # evicted by another process (a replica sharing the directory) since the listing
                continue
            except Exception as e:  # noqa: BLE001 - whatever a damaged file raises, start-up goes on
                log.warning("prefix cache: ignoring %s: %s", path, e)
                continue
            size += snapshot.nbytes + TOKEN_BYTES * len(tokens)
            if size > self._stats.budget_bytes:
                break
            kept.append((tokens, snapshot))
        for tokens, snapshot in reversed(kept):
            node = self._node_at(tokens)
            node.snapshot, node.persisted = snapshot, True
            self._stats.bytes += snapshot.nbytes
            self._stats.snapshots += 1
        log.info("prefix cache: loaded %d snapshot(s) from %s", len(kept), self.directory)

    def _remove_stale_temp_files(self) -> None:
        """Delete what writers killed between creating a temp file and renaming it left behind."""
        cutoff = time.time() - STALE_TMP_SECONDS
        removed = 0
        for path in self.directory.glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:  # gone already, or a read-only directory: only costs disk space
                continue
        if removed:
            log.info("prefix cache: removed %d unfinished write(s) from %s", removed, self.directory)

    def _read(self, path: Path) -> tuple[list[int], Snapshot]:
        """One file, checked against this cache's fingerprint, dtype, shapes and its own name. Read in one go:
        another process sharing the directory may replace or delete the file meanwhile, and a file opened
        for its header and reopened for its tensors could mix two versions."""
        data = path.read_bytes()
        meta = _metadata(data)
        if meta.get("format") != FILE_FORMAT:
            raise ValueError(f"unknown format {meta.get('format')!r}")
        if meta.get("fingerprint") != self.fingerprint or meta.get("dtype") != dtype_name(self.dtype):
            raise ValueError("written for another model or dtype")
        tokens = json.loads(meta.get("tokens", "null"))
        limit = self.vocab_size or float("inf")
        if not (
            isinstance(tokens, list)
            and tokens
            and all(isinstance(t, int) and 0 <= t < limit for t in tokens)
        ):
            raise ValueError("token ids missing or invalid")
        if self._path_file(tokens) != path:
            raise ValueError("file name does not match its token prefix")
        tensors = safetensors_load(data)
        if set(tensors) != set(TENSOR_NAMES):
            raise ValueError(f"unexpected tensors {sorted(tensors)}")
        if meta.get("sha256") != snapshot_checksum(tokens, self.fingerprint, tensors):
            raise ValueError("checksum mismatch: the file was altered or damaged")
        for name, t in tensors.items():
            shape, dtype = self.expected[name]
            if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                raise ValueError(f"{name} is {tuple(t.shape)} {t.dtype}, expected {tuple(shape)} {dtype}")
            if not torch.isfinite(t).all():
                raise ValueError(f"{name} holds non-finite values")
        t = {k: v.to(self.device) for k, v in tensors.items()}
        return tokens, Snapshot(RWKV7State(t["att_x_prev"], t["wkv"], t["ffn_x_prev"]), t["hidden"])


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors file's bytes (an 8-byte little-endian header length, then JSON)."""
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if not 0 < n <= len(data) - 8:
        raise ValueError("truncated file")
    header = json.loads(data[8 : 8 + n])
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def _common_prefix(edge: list[int], tokens: list[int], start: int) -> int:
    """How many leading tokens of `edge` equal tokens[start:]."""
    n = min(len(edge), len(tokens) - start)
    i = 0
    while i < n and edge[i] == tokens[start + i]:
        i += 1
    return i
