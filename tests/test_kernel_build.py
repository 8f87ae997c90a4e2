"""The kernel cache (`model/kernel_build.py`): keyed by what changes the binary, built once under an OS lock,
verified by SHA-256 before every load, private. A tiny C++ library stands in for the real one (the cache
logic does not depend on what it compiles, and it builds in a fraction of a second); the real library's
loading through the same code is covered by every test that uses the kernels, and at the end here."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from rwkv7_provider.model import kernel_build
from rwkv7_provider.model.kernel_build import LibrarySpec, Unit, UnsafeKernelDir, cache_key, ensure_built

pytestmark = pytest.mark.skipif(not (shutil.which("c++") and hasattr(os, "getuid")), reason="needs a C++ compiler (Unix)")
REAL_CXX = shutil.which("c++")


def tiny_spec(folder: Path, value: int = 7, flags: tuple[str, ...] = ()) -> LibrarySpec:
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "tiny.cpp"
    source.write_text(f'extern "C" int rwkv7_tiny() {{ return {value}; }}\n')
    return LibrarySpec(name="tiny", units=(Unit(source, flags),), cflags=("-O1", "-fPIC"),
                       include_dirs=(folder / "include",), lib_dirs=(folder / "lib",))


def call(library: Path) -> int:
    return ctypes.CDLL(str(library)).rwkv7_tiny()


def slow_compiler(tmp_path: Path, seconds: float) -> Path:
    """A `c++` that answers --version like the real one (same cache key) but, before compiling, stalls until
    the file `release` exists (at most `seconds`), logging the builder's pid for each compiler run: a builder
    that can be caught, and held, in the middle of a build."""
    script = tmp_path / "slow-c++"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case "$1" in --version|-dumpmachine) exec {REAL_CXX} "$@";; esac
        echo $PPID >> {tmp_path}/compiles.log
        i=0
        while [ ! -e {tmp_path}/release ] && [ $i -lt {int(seconds * 20)} ]; do sleep 0.05; i=$((i + 1)); done
        exec {REAL_CXX} "$@"
        """))
    script.chmod(0o755)
    return script


def builder(spec_dir: Path, root: Path, cxx: Path | str) -> subprocess.Popen:
    """ensure_built of the tiny library in another process (its own process group), printing 'built' or 'reused'."""
    code = (
        "import logging, sys; from pathlib import Path; logging.basicConfig(level=logging.WARNING)\n"
        "sys.path.insert(0, str(Path(sys.argv[3])))\n"
        "from test_kernel_build import tiny_spec\n"
        "from rwkv7_provider.model.kernel_build import ensure_built\n"
        "lib, built = ensure_built(tiny_spec(Path(sys.argv[1])), Path(sys.argv[2]))\n"
        "print('built' if built else 'reused', lib)\n"
    )
    env = {**os.environ, "CXX": str(cxx)}
    return subprocess.Popen([sys.executable, "-c", code, str(spec_dir), str(root), str(Path(__file__).parent)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_built_once_then_reused_and_private(tmp_path, caplog):
    spec, root = tiny_spec(tmp_path / "src"), tmp_path / "cache" / "kernels"
    library, built = ensure_built(spec, root)
    assert built and call(library) == 7
    # visible without any logging configured (warning level): what is compiled, where, and how long it took
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith("compiling the CPU kernels into") for m in messages)
    assert any(m.startswith("compiled the CPU kernels in") and m.endswith(" s") for m in messages)
    assert ensure_built(spec, root) == (library, False)
    for folder in (root, library.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert kernel_build.record_path(library).read_text().strip() == kernel_build._sha256(library)
    assert not list(library.parent.glob(kernel_build.BUILD_PREFIX + "*"))  # no temporary left behind


def test_cache_key_covers_the_binary_and_not_paths(tmp_path):
    """Two virtualenvs (different include / library paths, the same sources elsewhere) share one build;
    a different source, flag or compiler gets its own."""
    a, b = tiny_spec(tmp_path / "venv-a"), tiny_spec(tmp_path / "venv-b")
    assert a.include_dirs != b.include_dirs and a.units[0].source != b.units[0].source
    assert cache_key(a, REAL_CXX) == cache_key(b, REAL_CXX)
    assert cache_key(tiny_spec(tmp_path / "c", value=8), REAL_CXX) != cache_key(a, REAL_CXX)
    assert cache_key(tiny_spec(tmp_path / "d", flags=("-DX",)), REAL_CXX) != cache_key(a, REAL_CXX)
    other = tmp_path / "other-c++"
    other.write_text(f'#!/bin/sh\n[ "$1" = --version ] && echo "another compiler 1.0" && exit 0\nexec {REAL_CXX} "$@"\n')
    other.chmod(0o755)
    assert cache_key(a, str(other)) != cache_key(a, REAL_CXX)


@pytest.mark.parametrize("damage", ["replaced", "truncated", "record_missing", "half_built"])
def test_a_library_that_fails_verification_is_rebuilt(tmp_path, damage, caplog):
    spec, root = tiny_spec(tmp_path / "src"), tmp_path / "cache"
    library, _ = ensure_built(spec, root)
    good = library.read_bytes()
    if damage == "replaced":  # another valid library with a newer mtime, as a hostile replacement would be
        impostor, _ = ensure_built(tiny_spec(tmp_path / "evil", value=666), tmp_path / "evil-cache")
        shutil.copyfile(impostor, library)
    elif damage == "truncated":
        library.write_bytes(good[: len(good) // 2])
    elif damage == "record_missing":
        kernel_build.record_path(library).unlink()
    else:  # a builder killed between writing its objects and the record: leftovers and a library without record
        leftover = library.parent / (kernel_build.BUILD_PREFIX + "dead")
        leftover.mkdir()
        (leftover / "tiny.o").write_bytes(b"\0" * 10)
        kernel_build.record_path(library).unlink()
        library.write_bytes(good[:100])
    again, built = ensure_built(spec, root)
    assert again == library and built
    assert "rebuilding" in caplog.text
    assert kernel_build.verified(library) and call(library) == 7
    assert not list(library.parent.glob(kernel_build.BUILD_PREFIX + "*"))


def test_a_builder_killed_mid_build_does_not_block_the_next(tmp_path):
    """kill -9 during the compile: the OS drops its lock, the next builder removes its leftovers and builds."""
    spec_dir, root = tmp_path / "src", tmp_path / "cache"
    victim = builder(spec_dir, root, slow_compiler(tmp_path, 60))
    log = tmp_path / "compiles.log"
    deadline = time.monotonic() + 60
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.exists(), victim.communicate()[1]
    os.killpg(victim.pid, signal.SIGKILL)  # the builder and its compiler
    victim.wait()
    entry = next(p for p in root.iterdir() if p.is_dir())
    assert list(entry.glob(kernel_build.BUILD_PREFIX + "*"))  # the killed build left its temporary directory
    t0 = time.monotonic()
    after = builder(spec_dir, root, REAL_CXX)
    out, err = after.communicate(timeout=120)
    assert after.returncode == 0, err
    assert out.startswith("built") and time.monotonic() - t0 < 60
    assert not list(entry.glob(kernel_build.BUILD_PREFIX + "*"))
    assert call(Path(out.split()[1])) == 7


def test_concurrent_builders_wait_and_build_once(tmp_path):
    spec_dir, root = tmp_path / "src", tmp_path / "cache"
    first = builder(spec_dir, root, slow_compiler(tmp_path, 120))
    log = tmp_path / "compiles.log"
    while not log.exists():
        time.sleep(0.05)
    second = builder(spec_dir, root, slow_compiler(tmp_path, 120))
    assert "waiting" in second.stderr.readline()  # blocked on the lock while the first compiles
    (tmp_path / "release").touch()
    out1, _ = first.communicate(timeout=120)
    out2, _ = second.communicate(timeout=120)
    assert out1.startswith("built") and out2.startswith("reused")
    assert set(log.read_text().split()) == {str(first.pid)}  # the second never ran the compiler


def test_a_directory_others_can_write_is_refused(tmp_path):
    spec, root = tiny_spec(tmp_path / "src"), tmp_path / "shared"
    root.mkdir()
    root.chmod(0o777)
    with pytest.raises(UnsafeKernelDir, match="writable by group/others"):
        ensure_built(spec, root)
    root.chmod(0o700)
    library, _ = ensure_built(spec, root)
    library.chmod(0o666)
    with pytest.raises(UnsafeKernelDir, match="writable by group/others"):
        ensure_built(spec, root)


def test_unsafe_kernel_dir_falls_back_to_torch_with_a_warning(tmp_path):
    """The real library: refused with one warning, and the model still runs (plain torch)."""
    root = tmp_path / "kernels"
    root.mkdir()
    root.chmod(0o777)
    code = (
        "import torch\n"
        "from rwkv7_provider.model import RWKV7, cpu_kernels\n"
        "from rwkv7_provider.testing import SMALL\n"
        "assert not cpu_kernels.available()\n"
        "model = RWKV7(SMALL).eval()\n"
        "with torch.no_grad():\n"
        "    logits, _ = model(torch.tensor([[1]]))\n"
        "assert logits.shape == (1, 1, SMALL.vocab_size)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], env={**os.environ, "RWKV7_KERNEL_DIR": str(root)},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "writable by group/others" in run.stderr and "using plain torch" in run.stderr
    assert not any(root.iterdir())  # nothing was built into it
