"""TokenWeave's compute/communication overlap without SGLang: planning, tuning data, the schedule.

Nothing here imports SGLang. The planning modules (this package's names, ``split_plan``,
``tuning``, ``fallbacks``) are plain Python without torch either, so the decisions they make
are easy to test and are the same on every tensor-parallel rank.

- ``split_plan``: where one forward's tokens are cut into two splits, and what each split
  looks like to attention (request pieces, prefix lengths) and to the fused kernel (rows
  each rank owns).
- ``tuning``: the tuning file (split offset and SM budget per GPU, model shape, TP and token
  bucket), its validation, lookup and writing, and the built-in defaults.
- ``fallbacks``: why TokenWeave does not run in a process (model, TP size, settings).
- ``weave`` (torch): one forward pass of a decoder stack, fuse-only or in two token splits with
  overlapped communication; ``layer_parts``: a decoder layer cut at its all-reduces;
  ``gemm_carveout``: SMs the GEMMs leave to the communication kernel; ``synthetic``: a decoder
  stack of given shapes (the tuner and CPU tests). Imported by module, never by this package.
"""

from sglang_tokenweave.overlap.split_plan import (
    DEFAULT_ALIGN,
    Piece,
    Split,
    SplitPlan,
    plan_forward,
    split_align,
)
from sglang_tokenweave.overlap.tuning import (
    DEFAULT_FUSED_THRESHOLD,
    DEFAULT_SM_BUDGET,
    DEFAULT_SPLIT_OFFSET,
    DEFAULT_SPLIT_THRESHOLD,
    Bucket,
    Setting,
    TuningConfigError,
    TuningEntry,
    TuningKey,
    TuningTable,
    layer_shapes_for,
    load_tuning,
)

__all__ = [
    "DEFAULT_ALIGN",
    "DEFAULT_FUSED_THRESHOLD",
    "DEFAULT_SM_BUDGET",
    "DEFAULT_SPLIT_OFFSET",
    "DEFAULT_SPLIT_THRESHOLD",
    "Bucket",
    "Piece",
    "Setting",
    "Split",
    "SplitPlan",
    "TuningConfigError",
    "TuningEntry",
    "TuningKey",
    "TuningTable",
    "layer_shapes_for",
    "load_tuning",
    "plan_forward",
    "split_align",
]
