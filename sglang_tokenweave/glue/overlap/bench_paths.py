"""Benchmarks only: which path each prefill took, in the process that ran it.

``scripts/bench_tokenweave_model.py`` runs SGLang's ``bench_one_batch`` through
``glue/overlap/one_batch.py`` with ``SGLANG_TOKENWEAVE_BENCH_PATHS`` naming a file; TP rank 0 then
appends one JSON line per prefill forward: its token count, whether SGLang replayed a prefill
CUDA graph (its own verdict, ``ModelRunnerOutput.can_run_graph``), and the path:

- ``stock``: the overlay is off in this process;
- ``fuse-only`` / ``split``: the fused kernel on the whole batch / on two token splits;
- ``sglang``: the overlay kept SGLang's all-reduce + RMSNorm for this size;
- ``no-comm``: the benchmark bound without all-reduces.

A graph replay does not run the overlay's Python: its path is the one the overlay took when
that graph was captured (the smallest captured size that holds the batch, as SGLang pads).
The first line says which all-reduce SGLang's TP group set up and its multicast pointers.
The hook observes only; it changes nothing.
"""

from __future__ import annotations

import json
import os
from typing import Optional

PATHS_ENV = "SGLANG_TOKENWEAVE_BENCH_PATHS"
FEATURE = "bench_paths"  # the patch-table feature of the hook below


def captured_path(captured: dict, num_tokens: int) -> str:
    """The path of the graph a batch of ``num_tokens`` replays (padded up to a captured size)."""
    sizes = [size for size in captured if size >= num_tokens]
    return captured[min(sizes)] if sizes else "unknown"


def forward_path(state, num_tokens: int, graph: bool) -> str:
    if state is None:
        return "stock"
    if state.config.tokenweave_bench_skip_allreduce:
        return "no-comm"
    if graph:
        return captured_path(state.captured_paths, num_tokens)
    return state.last_path or "sglang"


def record_forward(result, model_runner, forward_batch, *args, **kwargs):
    """After ``ModelRunner.forward``: append this prefill's path (TP rank 0 only)."""
    path_file = os.environ.get(PATHS_ENV)
    if not path_file or model_runner.ps.tp_rank != 0 or not forward_batch.forward_mode.is_extend():
        return None
    from sglang_tokenweave.glue.overlap.runner_setup import STATE_ATTR, decoder_stack

    model = decoder_stack(model_runner)
    state = getattr(model, STATE_ATTR, None) if model is not None else None
    num_tokens = len(forward_batch.input_ids)
    graph = bool(result.can_run_graph)
    lines = [] if os.path.exists(path_file) else [{"allreduce": _tp_setup()}]
    lines.append({"tokens": num_tokens, "graph": graph, "path": forward_path(state, num_tokens, graph)})
    with open(path_file, "a") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    return None


def _tp_setup() -> Optional[dict]:
    from sglang.srt.distributed.parallel_state import get_tp_group

    from sglang_tokenweave.glue.overlap.allreduce_dispatch import group_setup

    return group_setup(get_tp_group())


def read_paths(text: str) -> tuple[Optional[dict], dict[int, dict]]:
    """(the TP group's all-reduce setup, {tokens: {"graph": bool or "mixed", "path": str}})
    from a paths file; a size whose forwards differed is reported "mixed" (with every path)."""
    setup, seen = None, {}
    for line in text.splitlines():
        record = json.loads(line)
        if "allreduce" in record:
            setup = record["allreduce"]
            continue
        entry = seen.setdefault(record["tokens"], {"graph": set(), "path": set()})
        entry["graph"].add(record["graph"])
        entry["path"].add(record["path"])
    out = {}
    for tokens, entry in seen.items():
        graph = entry["graph"].pop() if len(entry["graph"]) == 1 else "mixed"
        path = "+".join(sorted(entry["path"]))
        out[tokens] = {"graph": graph, "path": path}
    return setup, out
