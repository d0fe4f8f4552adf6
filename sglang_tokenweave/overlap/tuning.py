"""Tuning data for the overlap: split offset and communication SM budget per token bucket.

``scripts/tune_tokenweave.py`` measures, on one GPU type, model shape and TP size, which split
offset and SM budget are fastest for each token bucket, and writes them to a JSON file that
``--tokenweave-config`` loads. The file is data, keyed by what determines the timings (the GPU
name, the hidden size, every per-shard GEMM shape, TP), never by a model's name:

    {
      "format": "sglang-tokenweave-tuning",
      "version": 1,
      "meta": {...},                       # optional, free-form (versions, command, date)
      "entries": [
        {
          "gpu": "NVIDIA H100 80GB HBM3",  # torch.cuda.get_device_name()
          "hidden_size": 4096,
          "tp": 2,
          "layer_shapes": {                # [in_features, out_features] per TP shard
            "qkv": [4096, 3072], "o": [2048, 4096],
            "gate_up": [4096, 14336], "down": [7168, 4096]
          },
          "buckets": {
            "1024": {"split_offset": 0, "sm_budget": 16, "use_split": true},
            "4096": {"split_offset": 256, "sm_budget": 8, "use_split": true,
                     "use_fused": true}
          }
        }
      ]
    }

Lookup: the entry whose key matches exactly, then the largest bucket not above the batch's
token count. A batch below the smallest bucket, or with no matching entry (or no file), gets
the built-in defaults: split from ``DEFAULT_SPLIT_THRESHOLD`` tokens, offset
``DEFAULT_SPLIT_OFFSET``, ``DEFAULT_SM_BUDGET`` SMs, fused kernel from
``DEFAULT_FUSED_THRESHOLD`` tokens on.

``use_fused`` (optional, default true) says whether the fused kernel beats SGLang's own
all-reduce + RMSNorm at that bucket; where it does not, SGLang's path is kept.
``gemm_carveout`` (optional, default false): while two splits overlap, the GEMMs target all
SMs but the communication kernel's ``sm_budget`` (cuBLASLt's SM-count target). A GEMM sized
for every SM next to a running communication kernel runs its last wave on the few SMs left,
or (persistent kernels) waits for them; whether leaving the SMs free wins is measured.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

FORMAT_NAME = "sglang-tokenweave-tuning"
FORMAT_VERSION = 1

# Built-in defaults, used wherever the tuning data has nothing to say.
# Tokens; below this the batch runs whole ("fuse-only"). Eager prefill below ~8K tokens is
# host-bound on H100 TP4 (the GPU idles half of a 1K forward), and two splits double the host
# work per layer: measured, splitting lost at 1K-4K and won from 8K (benchmarks/results).
DEFAULT_SPLIT_THRESHOLD = 8192
DEFAULT_SPLIT_OFFSET = 0  # rows added to T // 2 before aligning the cut
DEFAULT_SM_BUDGET = 16  # SMs (thread blocks) the communication kernel may occupy
# Tokens; smaller batches (decode among them) keep SGLang's all-reduce + RMSNorm. On decode-sized
# batches SGLang's one-shot custom all-reduce competes with our kernel's two cross-GPU barriers:
# H100, 70B layer shape, batch-1 decode in CUDA graphs, fused vs stock: TP2 0.90-0.98x in every
# measurement, TP4 1.02-1.08x in one run and 0.87-0.96x in another; from 1K tokens the fused
# kernel is at or above stock at TP2 and TP4 (benchmarks/results). Unmeasured sizes (TP8) keep
# SGLang's path too.
DEFAULT_FUSED_THRESHOLD = 1024

LAYER_SHAPE_NAMES = ("qkv", "o", "gate_up", "down")

_ENTRY_FIELDS = {"gpu", "hidden_size", "tp", "layer_shapes", "buckets"}
_BUCKET_FIELDS = {"split_offset", "sm_budget", "use_split", "use_fused", "gemm_carveout"}
_TOP_FIELDS = {"format", "version", "meta", "entries"}


class TuningConfigError(ValueError):
    """The tuning data is malformed; the message names the file and the offending key."""


@dataclass(frozen=True)
class TuningKey:
    """What a set of tuned values applies to."""

    gpu: str
    hidden_size: int
    tp: int
    layer_shapes: tuple[tuple[str, int, int], ...]  # (name, in, out), sorted by name

    @classmethod
    def make(
        cls, gpu: str, hidden_size: int, tp: int, layer_shapes: Mapping[str, Any]
    ) -> "TuningKey":
        shapes = tuple(
            sorted((name, int(shape[0]), int(shape[1])) for name, shape in layer_shapes.items())
        )
        return cls(gpu=gpu, hidden_size=int(hidden_size), tp=int(tp), layer_shapes=shapes)

    def describe(self) -> str:
        shapes = ", ".join(f"{n}={i}x{o}" for n, i, o in self.layer_shapes)
        return f"gpu={self.gpu!r} hidden={self.hidden_size} tp={self.tp} [{shapes}]"


def layer_shapes_for(
    *,
    hidden_size: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    intermediate_size: int,
    tp: int,
) -> dict[str, tuple[int, int]]:
    """Per-shard [in, out] of a dense decoder layer's four GEMMs under tensor parallelism.

    KV heads are split across ranks when there are at least as many as ranks, and replicated
    otherwise (one head per rank), as SGLang's QKVParallelLinear does.
    """
    if num_heads % tp:
        raise ValueError(f"{num_heads} attention heads do not divide over tp={tp}")
    if intermediate_size % tp:
        raise ValueError(f"intermediate size {intermediate_size} does not divide over tp={tp}")
    if (num_kv_heads >= tp and num_kv_heads % tp) or (num_kv_heads < tp and tp % num_kv_heads):
        raise ValueError(f"{num_kv_heads} KV heads neither divide nor replicate over tp={tp}")
    q = num_heads // tp * head_dim
    kv = max(1, num_kv_heads // tp) * head_dim
    inter = intermediate_size // tp
    return {
        "qkv": (hidden_size, q + 2 * kv),
        "o": (q, hidden_size),
        "gate_up": (hidden_size, 2 * inter),
        "down": (inter, hidden_size),
    }


@dataclass(frozen=True)
class Bucket:
    """Tuned values for batches of at least ``tokens`` rows (up to the next bucket)."""

    tokens: int
    split_offset: int = DEFAULT_SPLIT_OFFSET
    sm_budget: int = DEFAULT_SM_BUDGET
    use_split: bool = True
    use_fused: bool = True
    gemm_carveout: bool = False

    def __post_init__(self):
        if self.tokens < 1 or self.sm_budget < 1:
            raise ValueError(f"bucket {self.tokens}: tokens and sm_budget must be positive")
        if self.use_split and not self.use_fused:
            raise ValueError(f"bucket {self.tokens}: splitting needs the fused kernel")

    def to_json(self) -> dict:
        return {
            "split_offset": self.split_offset,
            "sm_budget": self.sm_budget,
            "use_split": self.use_split,
            "use_fused": self.use_fused,
            "gemm_carveout": self.gemm_carveout,
        }


@dataclass(frozen=True)
class Setting:
    """What one forward uses, resolved from the tuning data or the defaults.

    The plan splits a batch of T rows iff ``split_threshold`` is not None and T >= it.
    """

    split_offset: int
    sm_budget: int
    split_threshold: Optional[int]
    use_fused: bool
    gemm_carveout: bool  # split GEMMs leave ``sm_budget`` SMs to the communication kernel
    bucket: Optional[int]  # the bucket it came from; None for the defaults
    source: str  # "tuning file", "defaults" or "flags" (a flag overrode a value)


@dataclass(frozen=True)
class TuningEntry:
    key: TuningKey
    buckets: tuple[Bucket, ...]

    def __post_init__(self):
        ordered = tuple(sorted(self.buckets, key=lambda b: b.tokens))
        sizes = [b.tokens for b in ordered]
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"duplicate buckets in {sizes} for {self.key.describe()}")
        object.__setattr__(self, "buckets", ordered)

    def bucket_for(self, num_tokens: int) -> Optional[Bucket]:
        """The largest bucket not above ``num_tokens``."""
        below = [b for b in self.buckets if b.tokens <= num_tokens]
        return below[-1] if below else None

    def to_json(self) -> dict:
        return {
            "gpu": self.key.gpu,
            "hidden_size": self.key.hidden_size,
            "tp": self.key.tp,
            "layer_shapes": {n: [i, o] for n, i, o in self.key.layer_shapes},
            "buckets": {str(b.tokens): b.to_json() for b in self.buckets},
        }


def default_setting(num_tokens: int) -> Setting:
    return Setting(
        split_offset=DEFAULT_SPLIT_OFFSET,
        sm_budget=DEFAULT_SM_BUDGET,
        split_threshold=DEFAULT_SPLIT_THRESHOLD,
        use_fused=num_tokens >= DEFAULT_FUSED_THRESHOLD,
        gemm_carveout=False,
        bucket=None,
        source="defaults",
    )


@dataclass(frozen=True)
class TuningTable:
    entries: tuple[TuningEntry, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def find(self, key: TuningKey) -> Optional[TuningEntry]:
        for entry in self.entries:
            if entry.key == key:
                return entry
        return None

    def lookup(
        self,
        key: TuningKey,
        num_tokens: int,
        *,
        split_threshold: Optional[int] = None,
        sm_budget: Optional[int] = None,
        fused_threshold: Optional[int] = None,
    ) -> Setting:
        """The setting for a batch of ``num_tokens`` rows. ``split_threshold``, ``sm_budget``
        and ``fused_threshold``, when given (from command-line flags), override the data."""
        entry = self.find(key)
        bucket = entry.bucket_for(num_tokens) if entry else None
        if bucket is None:
            setting = default_setting(num_tokens)
        else:
            setting = Setting(
                split_offset=bucket.split_offset,
                sm_budget=bucket.sm_budget,
                # A tuned bucket decides on its own: every batch it covers is >= its size.
                split_threshold=bucket.tokens if bucket.use_split else None,
                use_fused=bucket.use_fused,
                gemm_carveout=bucket.gemm_carveout,
                bucket=bucket.tokens,
                source="tuning file",
            )
        if split_threshold is not None:
            setting = replace(setting, split_threshold=split_threshold, source="flags")
        if sm_budget is not None:
            setting = replace(setting, sm_budget=sm_budget, source="flags")
        if fused_threshold is not None:
            setting = replace(setting, use_fused=num_tokens >= fused_threshold, source="flags")
        return setting

    def with_entry(self, entry: TuningEntry) -> "TuningTable":
        """A copy with ``entry`` added, replacing any entry with the same key."""
        kept = tuple(e for e in self.entries if e.key != entry.key)
        return TuningTable(entries=kept + (entry,), meta=self.meta)

    def to_json(self) -> dict:
        data: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
        if self.meta:
            data["meta"] = dict(self.meta)
        data["entries"] = [e.to_json() for e in self.entries]
        return data

    def save(self, path: str) -> None:
        """Write the file atomically, so a reader never sees half of it."""
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tuning-", suffix=".json", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_json(), f, indent=2)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def from_json(cls, data: Any, source: str = "tuning data") -> "TuningTable":
        return _parse_table(data, source)

    @classmethod
    def load(cls, path: str) -> "TuningTable":
        try:
            with open(path) as f:
                data = json.load(f, object_pairs_hook=_reject_duplicate_keys)
        except OSError as e:
            raise TuningConfigError(f"{path}: cannot read tuning file: {e}") from e
        except (json.JSONDecodeError, _DuplicateKey) as e:
            raise TuningConfigError(f"{path}: not valid JSON: {e}") from e
        return _parse_table(data, path)


def load_tuning(path: Optional[str]) -> TuningTable:
    """The table ``--tokenweave-config`` names, or an empty one (all defaults)."""
    return TuningTable() if path is None else TuningTable.load(path)


# --- validation -------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


def _reject_duplicate_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _parse_table(data: Any, source: str) -> TuningTable:
    def fail(where: str, problem: str) -> TuningConfigError:
        return TuningConfigError(f"{source}: {where}: {problem}")

    if not isinstance(data, dict):
        raise fail("top level", f"must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _TOP_FIELDS)
    if unknown:
        raise fail(unknown[0], f"unknown key (allowed: {sorted(_TOP_FIELDS)})")
    if data.get("format") != FORMAT_NAME:
        raise fail("format", f"must be {FORMAT_NAME!r}, got {data.get('format')!r}")
    if data.get("version") != FORMAT_VERSION:
        version = data.get("version")
        raise fail("version", f"unsupported version {version!r} (want {FORMAT_VERSION})")
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise fail("meta", "must be a JSON object")
    entries_raw = data.get("entries")
    if not isinstance(entries_raw, list):
        raise fail("entries", "must be a list")

    entries = []
    first_index: dict[TuningKey, int] = {}
    for i, raw in enumerate(entries_raw):
        entry = _parse_entry(raw, f"entries[{i}]", fail)
        if entry.key in first_index:
            raise fail(
                f"entries[{i}]",
                f"same key as entries[{first_index[entry.key]}] ({entry.key.describe()})",
            )
        first_index[entry.key] = i
        entries.append(entry)
    return TuningTable(entries=tuple(entries), meta=meta)


def _parse_entry(raw: Any, where: str, fail) -> TuningEntry:
    if not isinstance(raw, dict):
        raise fail(where, "must be a JSON object")
    unknown, missing = sorted(set(raw) - _ENTRY_FIELDS), sorted(_ENTRY_FIELDS - set(raw))
    if unknown:
        raise fail(f"{where}.{unknown[0]}", f"unknown key (allowed: {sorted(_ENTRY_FIELDS)})")
    if missing:
        raise fail(f"{where}.{missing[0]}", "missing")
    gpu = raw["gpu"]
    if not isinstance(gpu, str) or not gpu.strip():
        raise fail(f"{where}.gpu", f"must be a non-empty string, got {gpu!r}")
    hidden = _positive_int(raw["hidden_size"], f"{where}.hidden_size", fail)
    tp = _positive_int(raw["tp"], f"{where}.tp", fail)

    shapes = raw["layer_shapes"]
    if not isinstance(shapes, dict):
        raise fail(f"{where}.layer_shapes", "must be a JSON object")
    mismatched = sorted(set(shapes) ^ set(LAYER_SHAPE_NAMES))
    if mismatched:
        name = mismatched[0]
        problem = "unknown layer" if name in shapes else "missing"
        raise fail(f"{where}.layer_shapes.{name}", f"{problem} (want {list(LAYER_SHAPE_NAMES)})")
    for name, shape in shapes.items():
        if not (isinstance(shape, list) and len(shape) == 2):
            raise fail(f"{where}.layer_shapes.{name}", f"must be [in, out], got {shape!r}")
        for k, dim in enumerate(shape):
            _positive_int(dim, f"{where}.layer_shapes.{name}[{k}]", fail)

    buckets_raw = raw["buckets"]
    if not isinstance(buckets_raw, dict) or not buckets_raw:
        raise fail(f"{where}.buckets", "must be a non-empty JSON object")
    buckets: dict[int, Bucket] = {}
    for name, value in buckets_raw.items():
        bucket = _parse_bucket(name, value, f"{where}.buckets.{name}", fail)
        if bucket.tokens in buckets:
            raise fail(f"{where}.buckets.{name}", f"bucket {bucket.tokens} given twice")
        buckets[bucket.tokens] = bucket
    return TuningEntry(
        key=TuningKey.make(gpu, hidden, tp, shapes),
        buckets=tuple(buckets[t] for t in sorted(buckets)),
    )


def _parse_bucket(name: str, raw: Any, where: str, fail) -> Bucket:
    if not (name.isascii() and name.isdigit() and int(name) > 0):
        raise fail(where, "bucket names are token counts (positive integers)")
    if not isinstance(raw, dict):
        raise fail(where, "must be a JSON object")
    unknown = sorted(set(raw) - _BUCKET_FIELDS)
    if unknown:
        raise fail(f"{where}.{unknown[0]}", f"unknown key (allowed: {sorted(_BUCKET_FIELDS)})")
    for key in ("split_offset", "sm_budget", "use_split"):
        if key not in raw:
            raise fail(f"{where}.{key}", "missing")
    offset = raw["split_offset"]
    if not _is_int(offset):
        raise fail(f"{where}.split_offset", f"must be an integer, got {offset!r}")
    sm_budget = _positive_int(raw["sm_budget"], f"{where}.sm_budget", fail)
    flags = {}
    for key, default in (("use_split", True), ("use_fused", True), ("gemm_carveout", False)):
        value = raw.get(key, default)
        if not isinstance(value, bool):
            raise fail(f"{where}.{key}", f"must be true or false, got {value!r}")
        flags[key] = value
    if flags["use_split"] and not flags["use_fused"]:
        raise fail(f"{where}.use_split", "splitting needs the fused kernel (use_fused is false)")
    return Bucket(tokens=int(name), split_offset=offset, sm_budget=sm_budget, **flags)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: Any, where: str, fail) -> int:
    if not _is_int(value) or value < 1:
        raise fail(where, f"must be a positive integer, got {value!r}")
    return value
