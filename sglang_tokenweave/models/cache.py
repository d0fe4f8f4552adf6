"""Where converted checkpoints live, and how one is installed there atomically.

Layout: ``<cache root>/<name>-<first 16 hex digits of the GGUF's sha256>-v<FORMAT_VERSION>/``,
a complete Hugging Face checkpoint with ``MARKER`` written last. A checkpoint is built in a
temporary sibling directory and renamed into place, so a reader sees all of it or nothing, and
two processes converting at once both end up with one complete copy.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Mapping

from sglang_tokenweave.models import ModelError

CACHE_ENV = "SGLANG_TOKENWEAVE_CACHE"
FORMAT_VERSION = 1  # bump when the conversion writes different files for the same GGUF
MARKER = "sglang_tokenweave_source.json"


def cache_root(env: Mapping[str, str] = os.environ) -> Path:
    """``$SGLANG_TOKENWEAVE_CACHE``, else ``$XDG_CACHE_HOME/sglang_tokenweave``, else
    ``~/.cache/sglang_tokenweave``."""
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "sglang_tokenweave"


def checkpoint_dir(root: Path, name: str, gguf_sha256: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "model"
    return root / f"{safe}-{gguf_sha256[:16]}-v{FORMAT_VERSION}"


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def install_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Build ``target`` with ``build(staging_dir)`` and rename it into place. An incomplete
    leftover at ``target`` is replaced; a complete one that appeared meanwhile is kept. Errors
    of the file system (no space, no permission) become one ``ModelError``."""
    if is_complete(target):
        return target
    staging = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        build(staging)
        if not is_complete(staging):
            raise ModelError(f"internal error: the conversion did not finish {staging}")
        _readable_by_all(staging)
        if target.exists() and not is_complete(target):  # a copy left incomplete by hand
            shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:
            if not is_complete(target):  # not another process's complete copy: a real failure
                raise
    except OSError as e:
        raise ModelError(describe_os_error(e, target.parent)) from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _readable_by_all(folder: Path) -> None:
    """mkdtemp and safetensors create owner-only entries; a shared cache is read by other users."""
    folder.chmod(0o755)
    for entry in folder.iterdir():
        entry.chmod(0o755 if entry.is_dir() else 0o644)


def work_dir(root: Path) -> tempfile.TemporaryDirectory:
    """A scratch directory on the cache's file system (downloads, extracted files)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix=".work-", dir=root)
    except OSError as e:
        raise ModelError(describe_os_error(e, root)) from None


def describe_os_error(e: OSError, directory: Path) -> str:
    """One sentence for a file-system error met while writing under ``directory``."""
    if e.errno == errno.ENOSPC:
        return (f"no space left on the device of {directory} (a converted model needs about 4 times "
                f"its GGUF's size while it is written); free some space or set {CACHE_ENV} to another disk")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write the model cache at {directory} ({e.strerror}); set {CACHE_ENV} to a writable directory"
    return f"cannot write under {directory} ({e.strerror or e})"

