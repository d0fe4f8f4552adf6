"""SHA-256 checks of downloaded and carried files."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sglang_tokenweave.models import ModelError

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as e:
        raise ModelError(f"cannot read {path} ({e.strerror or e})") from None
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, what: str) -> None:
    """Raise ``ModelError`` unless ``path`` hashes to ``expected``."""
    actual = sha256_of(path)
    if actual != expected.lower():
        raise ModelError(f"{what} {path} has sha256 {actual}, expected {expected}: the file is corrupt "
                         "or not the published one; delete it and fetch it again")
