"""Compiling a small C++ library once per machine into a private, verified cache that concurrent and killed
builders cannot break.

The library is code the service loads, so the cache is treated like code:
- Key: SHA-256 of what changes the binary (every source and header, the flags, the compiler's `--version`
  and target, the torch build) and nothing else: no paths, no times. Two virtualenvs with the same torch and
  compiler share one build instead of rebuilding over each other.
- Lock: `fcntl.flock` on `<root>/<key>.lock`. A second builder waits for the first; the OS releases the lock
  when its holder dies (even by SIGKILL), so a killed builder never leaves a lock that hangs later starts.
- Atomic: objects and library are built in a temporary directory beside the cache entry, the library is
  renamed into place, then its SHA-256 is written to `<library>.sha256` (temporary file + rename). Every load
  recomputes the hash and compares it: a replaced, truncated or half-built library, or a missing record,
  is rebuilt. A killed builder's temporary directory is removed by the next one.
- Private: directories are created 0700; a cache directory or library owned by another user or writable by
  group / others is refused with a warning (`UnsafeKernelDir`), and callers fall back to plain torch.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; the kernels are not built there (see ensure_built)
    fcntl = None

log = logging.getLogger(__name__)

KERNEL_DIR_ENV = "RWKV7_KERNEL_DIR"
# A compile that takes longer than this is stuck; the builder gives up and frees the lock.
COMPILE_TIMEOUT_S = 900
BUILD_PREFIX = "build-"


class KernelBuildError(RuntimeError):
    """The library cannot be built or used here (no compiler, a compile error, an unsafe cache directory)."""


class UnsafeKernelDir(KernelBuildError):
    """The cache directory or library could be modified by another user, so it is not loaded."""


@dataclass(frozen=True)
class Unit:
    """One source file and the flags only it is compiled with (e.g. an instruction set's -m flags)."""

    source: Path
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class LibrarySpec:
    """What to compile and link. Paths (`include_dirs`, `lib_dirs`) are not part of the cache key: they
    differ between virtualenvs that produce the same binary."""

    name: str
    units: tuple[Unit, ...]
    headers: tuple[Path, ...] = ()
    cflags: tuple[str, ...] = ("-O3", "-std=c++17", "-fPIC")
    include_dirs: tuple[Path, ...] = ()
    lib_dirs: tuple[Path, ...] = ()
    libs: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    identity: tuple[str, ...] = ()  # further facts the binary depends on, e.g. the torch version


def kernel_root() -> Path:
    """$RWKV7_KERNEL_DIR, else ~/.cache/rwkv7_provider/kernels."""
    root = os.environ.get(KERNEL_DIR_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "rwkv7_provider" / "kernels"


def compiler() -> str:
    """$CXX, else c++."""
    return os.environ.get("CXX") or "c++"


@functools.cache
def compiler_identity(cxx: str) -> str:
    """The compiler's `--version` text and target triple: what distinguishes the binaries two compilers make."""
    out = []
    for flag in ("--version", "-dumpmachine"):
        try:
            run = subprocess.run([cxx, flag], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            raise KernelBuildError(f"no usable C++ compiler ({cxx!r}: {e}); install g++ or set CXX") from e
        if run.returncode != 0:
            raise KernelBuildError(f"{cxx} {flag} failed: {run.stderr.strip()[-300:]}")
        out.append(run.stdout.strip())
    return "\n".join(out)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(spec: LibrarySpec, cxx: str) -> str:
    """A digest of everything that changes the binary, and of nothing that does not (paths, times)."""
    facts = {
        "units": [(u.source.name, _sha256(u.source), u.flags) for u in spec.units],
        "headers": [(h.name, _sha256(h)) for h in spec.headers],
        "cflags": spec.cflags,
        "libs": spec.libs,
        "ldflags": spec.ldflags,
        "compiler": compiler_identity(cxx),
        "identity": spec.identity,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20]


def check_private(path: Path) -> None:
    """Refuse a path another user could change: owned by someone other than this user or root (a cache built
    ahead by root, e.g. in a container image, is fine), or writable by group / others."""
    st = path.stat()
    if st.st_uid not in (os.getuid(), 0):
        problem = f"owned by uid {st.st_uid}"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"writable by group/others (mode {stat.S_IMODE(st.st_mode):o})"
    else:
        return
    raise UnsafeKernelDir(
        f"{path} is {problem}: another user could replace the kernels this process runs; not loading them. "
        f"Use a private directory (chmod 700, or set {KERNEL_DIR_ENV})"
    )


def private_dir(path: Path) -> Path:
    """`path` as a directory only this user can modify: created 0700, or an existing one checked."""
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask, never widened; make it exact
    check_private(path)
    return path


def record_path(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def verified(library: Path) -> bool:
    """Whether `library` exists, is private and matches the SHA-256 recorded when it was built."""
    record = record_path(library)
    if not library.exists() and not record.exists():
        return False
    if not library.exists() or not record.exists():
        log.warning("the cached library %s is incomplete (%s missing): rebuilding", library,
                    "library" if not library.exists() else "its SHA-256 record")
        return False
    check_private(library)
    if _sha256(library) != record.read_text().strip():
        log.warning("the cached library %s does not match its recorded SHA-256 (replaced, truncated or "
                    "half-written): rebuilding", library)
        return False
    return True


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """An OS file lock (flock): waited on while another process holds it, released when its holder exits
    or dies, so no stale lock outlives a killed builder."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another process is building the CPU kernels (lock %s); waiting for it", path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _compile(spec: LibrarySpec, cxx: str, out_dir: Path) -> Path:
    """All units in parallel, then the link; returns the library in `out_dir`."""
    includes = [f"-I{d}" for d in spec.include_dirs]
    jobs = []
    for unit in spec.units:
        obj = out_dir / (unit.source.stem + ".o")
        cmd = [cxx, *spec.cflags, *unit.flags, *includes, "-c", str(unit.source), "-o", str(obj)]
        jobs.append((unit, obj, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    failures = []
    for unit, _, proc in jobs:
        try:
            _, err = proc.communicate(timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            err = f"timed out after {COMPILE_TIMEOUT_S} s\n{err}"
        if proc.returncode != 0:
            failures.append(f"{unit.source.name}: {err.strip()[-1500:]}")
    if failures:
        raise KernelBuildError("compiling the CPU kernels failed:\n" + "\n".join(failures))
    library = out_dir / f"{spec.name}.so"
    link = [cxx, "-shared", *spec.ldflags, *(str(obj) for _, obj, _ in jobs), *(f"-L{d}" for d in spec.lib_dirs),
            *(f"-l{lib}" for lib in spec.libs), "-o", str(library)]
    run = subprocess.run(link, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    if run.returncode != 0:
        raise KernelBuildError(f"linking the CPU kernels failed: {run.stderr.strip()[-1500:]}")
    return library


def ensure_built(spec: LibrarySpec, root: Path | None = None) -> tuple[Path, bool]:
    """(path of the verified library, whether this call built it). Builds under the lock when the cached one
    is missing or fails verification; raises KernelBuildError (UnsafeKernelDir for an unsafe directory)."""
    if fcntl is None:
        raise KernelBuildError("the CPU kernels are built on Linux and macOS only")
    cxx = compiler()
    try:
        key = cache_key(spec, cxx)
    except OSError as e:
        raise KernelBuildError(f"cannot read the kernel sources: {e}") from e
    root = private_dir(root or kernel_root())
    entry = private_dir(root / key)
    library = entry / f"{spec.name}.so"
    if verified(library):
        return library, False
    with exclusive_lock(root / f"{key}.lock"):
        if verified(library):  # another process built it while this one waited
            return library, False
        for leftover in entry.glob(BUILD_PREFIX + "*"):  # a killed builder's: nobody else holds the lock
            shutil.rmtree(leftover, ignore_errors=True)
        record_path(library).unlink(missing_ok=True)
        log.warning("compiling the CPU kernels into %s (once per compiler and torch version, ~20 s) ...", entry)
        t0 = time.perf_counter()
        work = Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=entry))
        try:
            os.replace(_compile(spec, cxx, work), library)
            _write_atomic(record_path(library), _sha256(library) + "\n")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.warning("compiled the CPU kernels in %.1f s", time.perf_counter() - t0)
    return library, True
