"""Every place where the overlay touches SGLang, declared once.

Each entry names the SGLang attribute (resolved against the installed, pinned SGLang at start-up:
a missing one aborts with its name), our hook (``module:function``), the kind of hook (SGLang's
``HookType``: before, after, around, replace), the feature that needs it, and why. A hook is
registered only when its feature is active in the process, so an inactive feature costs nothing.

Features: ``core`` (always, when the overlay is switched on), ``cpu`` (only where no CUDA device
exists: makes SGLang serve on CPU for tests), ``http`` (the process that starts SGLang's HTTP
server), and one per user-facing feature.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PatchTarget:
    target: str
    hook: str
    kind: str
    feature: str
    why: str


PATCH_TABLE: tuple[PatchTarget, ...] = (
    PatchTarget(
        target="sglang.srt.managers.scheduler.Scheduler.__init__",
        hook="sglang_tokenweave.report:record_scheduler_process",
        kind="after",
        feature="core",
        why="each scheduler / TP worker process reports which overlay features it runs with",
    ),
    PatchTarget(
        target="sglang.srt.entrypoints.http_server.launch_server",
        hook="sglang_tokenweave.report:add_status_route",
        kind="before",
        feature="http",
        why="serve the per-process reports at GET /tokenweave/status beside SGLang's routes",
    ),
    PatchTarget(
        target="sglang.srt.layers.rotary_embedding.base.RotaryEmbedding.__init__",
        hook="sglang_tokenweave.cpu_support:rotary_init_without_vllm",
        kind="around",
        feature="cpu",
        why="off CUDA SGLang imports vllm for a fallback rotary kernel that the native (CPU) path never calls",
    ),
    PatchTarget(
        target="sglang.srt.distributed.parallel_state.GroupCoordinator.__init__",
        hook="sglang_tokenweave.cpu_support:group_without_gpu_communicators",
        kind="before",
        feature="cpu",
        why="TP > 1 on CPU must use gloo alone: SGLang would build a PyNccl communicator",
    ),
    PatchTarget(
        target="sglang.srt.model_executor.model_runner.ModelRunner.init_threads_binding",
        hook="sglang_tokenweave.cpu_support:share_cpu_threads",
        kind="replace",
        feature="cpu",
        why="SGLang binds one NUMA node per TP rank; a small machine has one node for all ranks",
    ),
    # --- feature "tokenweave" (fused all-reduce + norm, token splitting) ---
    PatchTarget(
        target="sglang.srt.model_executor.model_runner.ModelRunner.init_attention_backends",
        hook="sglang_tokenweave.tokenweave.hooks:after_attention_backends",
        kind="after",
        feature="tokenweave",
        why="decide once per process (fallback reasons) and build the fused ops after the model and "
        "TP groups exist and before any CUDA graph is captured",
    ),
    PatchTarget(
        target="sglang.srt.models.llama.LlamaModel.forward",
        hook="sglang_tokenweave.tokenweave.hooks:model_forward",
        kind="around",
        feature="tokenweave",
        why="the decoder loop with fused all-reduce + residual + RMSNorm calls and token splitting",
    ),
    PatchTarget(
        target="sglang.srt.models.qwen2.Qwen2Model.forward",
        hook="sglang_tokenweave.tokenweave.hooks:model_forward",
        kind="around",
        feature="tokenweave",
        why="the same decoder loop for Qwen2 and Qwen3 (Qwen3Model inherits this forward)",
    ),
    PatchTarget(
        target="sglang.srt.model_executor.runner.prefill_cuda_graph_runner.PrefillCudaGraphRunner.can_run_graph",
        hook="sglang_tokenweave.tokenweave.hooks:prefill_graph_admits",
        kind="around",
        feature="tokenweave",
        why="batches that split run eagerly: a captured prefill graph replays one schedule without splits",
    ),
    # --- feature "deterministic_requests" (verify and roll back) ---
)
