"""Every place where the overlay touches SGLang, declared once.

Each entry names the SGLang attribute (resolved against the installed, pinned SGLang at start-up:
a missing one aborts with its name), our hook (``module:function``), the kind of hook (SGLang's
``HookType``: before, after, around, replace), the feature that needs it, and why. A hook is
registered only when its feature is active in the process, so an inactive feature costs nothing.
Kind ``called``: an SGLang internal our glue calls directly (``hook`` names our caller); it is
resolved at start-up like the hooks, so a rename fails there, and never registered.

Features: ``core`` (always, when the overlay is switched on), ``cpu`` (only where no CUDA device
exists: makes SGLang serve on CPU for tests), ``http`` (the process that starts SGLang's HTTP
server), ``bench_paths`` (benchmarks only), and one per user-facing feature.
"""

from __future__ import annotations

from dataclasses import dataclass

# The SGLang version every entry was checked against (equal to the pin in pins.txt: tested).
CHECKED_AGAINST = "0.5.17"
CALLED = "called"


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
        hook="sglang_tokenweave.glue.report:record_scheduler_process",
        kind="after",
        feature="core",
        why="each scheduler / TP worker process reports which overlay features it runs with",
    ),
    PatchTarget(
        target="sglang.srt.entrypoints.http_server.launch_server",
        hook="sglang_tokenweave.glue.report:add_status_route",
        kind="before",
        feature="http",
        why="serve the per-process reports at GET /tokenweave/status beside SGLang's routes",
    ),
    PatchTarget(
        target="sglang.srt.utils.watchdog.SubprocessWatchdog.__init__",
        hook="sglang_tokenweave.glue.child_exits:watch_children",
        kind="after",
        feature="http",
        why="know the scheduler (per rank) and detokenizer processes, to name one that ends the server",
    ),
    PatchTarget(
        target="sglang.srt.utils.common.kill_process_tree",
        hook="sglang_tokenweave.glue.child_exits:report_failed_children",
        kind="before",
        feature="http",
        why="before a failed child takes the server down, log which one ended and how (SIGKILL: the OOM "
        "killer); the surviving ranks' errors usually reach the log first",
    ),
    PatchTarget(
        target="sglang.srt.layers.rotary_embedding.base.RotaryEmbedding.__init__",
        hook="sglang_tokenweave.glue.cpu_support:rotary_init_without_vllm",
        kind="around",
        feature="cpu",
        why="off CUDA SGLang imports vllm for a fallback rotary kernel that the native (CPU) path never calls",
    ),
    PatchTarget(
        target="sglang.srt.distributed.parallel_state.GroupCoordinator.__init__",
        hook="sglang_tokenweave.glue.cpu_support:group_without_gpu_communicators",
        kind="before",
        feature="cpu",
        why="TP > 1 on CPU must use gloo alone: SGLang would build a PyNccl communicator",
    ),
    PatchTarget(
        target="sglang.srt.model_executor.model_runner.ModelRunner.init_threads_binding",
        hook="sglang_tokenweave.glue.cpu_support:share_cpu_threads",
        kind="replace",
        feature="cpu",
        why="SGLang binds one NUMA node per TP rank; a small machine has one node for all ranks",
    ),
    PatchTarget(
        target="sglang.srt.utils.common.get_available_gpu_memory",
        hook="sglang_tokenweave.glue.cpu_support:rank_share_of_cpu_memory",
        kind="around",
        feature="cpu",
        why="on CPU SGLang gives each rank a NUMA node's free memory for its KV pool; our ranks share "
        "the machine, so each sizes its pools from its share (else the OOM killer ends a rank)",
    ),
    PatchTarget(
        target="sglang.srt.constrained.xgrammar_backend._allocate_token_bitmask",
        hook="sglang_tokenweave.glue.cpu_grammar:allocate_bitmask_unpinned",
        kind="replace",
        feature="cpu",
        why="xgrammar's token bitmask is pinned for a GPU copy; pinning without a CUDA driver kills the scheduler",
    ),
    PatchTarget(
        target="sglang.srt.constrained.xgrammar_backend.XGrammarGrammar.apply_vocab_mask",
        hook="sglang_tokenweave.glue.cpu_grammar:apply_bitmask_on_cpu",
        kind="around",
        feature="cpu",
        why="SGLang applies the bitmask with a GPU kernel and raises on CPU logits; xgrammar has a CPU kernel",
    ),
    PatchTarget(
        target="sglang.srt.managers.scheduler.Scheduler.handle_generate_request",
        hook="sglang_tokenweave.glue.prompt_guard:refuse_invalid_prompt",
        kind="around",
        feature="core",
        why="refuse (HTTP 400) a prompt without tokens or with token ids outside the vocabulary, which would "
        "end the scheduler at its first forward pass; aborted as SGLang aborts a request for an unknown session "
        "(Req, Req.set_finish_with_abort, Scheduler.init_req_max_new_tokens, Scheduler._add_request_to_queue)",
    ),
    PatchTarget(
        target="sglang.srt.managers.io_struct.GenerateReqInput.normalize_batch_and_arguments",
        hook="sglang_tokenweave.glue.request_errors:as_bad_request",
        kind="around",
        feature="core",
        why="a per-prompt list shorter than the batch (or of the wrong item type) is the client's error: HTTP 400, not 500",
    ),
    PatchTarget(
        target="sglang.srt.managers.io_struct.GenerateReqInput.__getitem__",
        hook="sglang_tokenweave.glue.request_errors:as_bad_request",
        kind="around",
        feature="core",
        why="the same when the batch is split into one sub-request per prompt",
    ),
    # --- feature "tokenweave" (fused all-reduce + norm, token splitting) ---
    PatchTarget(
        target="sglang.srt.model_executor.model_runner.ModelRunner.init_attention_backends",
        hook="sglang_tokenweave.glue.overlap.hooks:after_attention_backends",
        kind="after",
        feature="tokenweave",
        why="decide once per process (fallback reasons) and build the fused ops after the model and "
        "TP groups exist and before any CUDA graph is captured",
    ),
    PatchTarget(
        target="sglang.srt.models.llama.LlamaModel.forward",
        hook="sglang_tokenweave.glue.overlap.hooks:model_forward",
        kind="around",
        feature="tokenweave",
        why="the decoder loop with fused all-reduce + residual + RMSNorm calls and token splitting",
    ),
    PatchTarget(
        target="sglang.srt.models.qwen2.Qwen2Model.forward",
        hook="sglang_tokenweave.glue.overlap.hooks:model_forward",
        kind="around",
        feature="tokenweave",
        why="the same decoder loop for Qwen2 and Qwen3 (Qwen3Model inherits this forward)",
    ),
    PatchTarget(
        target="sglang.srt.model_executor.runner.prefill_cuda_graph_runner.PrefillCudaGraphRunner.can_run_graph",
        hook="sglang_tokenweave.glue.overlap.hooks:prefill_graph_admits",
        kind="around",
        feature="tokenweave",
        why="batches that split run eagerly: a captured prefill graph replays one schedule without splits",
    ),
    # --- feature "bench_paths" (benchmarks only: glue/overlap/one_batch.py registers it) ---
    PatchTarget(
        target="sglang.srt.model_executor.model_runner.ModelRunner.forward",
        hook="sglang_tokenweave.glue.overlap.bench_paths:record_forward",
        kind="after",
        feature="bench_paths",
        why="record whether each benchmarked prefill replayed a CUDA graph and which path it ran (observes only)",
    ),
    # --- feature "deterministic_requests" (verify and roll back) ---
    PatchTarget(
        target="sglang.srt.entrypoints.http_server.launch_server",
        hook="sglang_tokenweave.glue.determinism.http_api:install_middleware",
        kind="before",
        feature="http",
        why="check the `deterministic` field of every request (HTTP 400 with a reason) and carry it in custom_params; installed whenever the overlay runs, so a server without the feature refuses such requests instead of ignoring the flag",
    ),
    PatchTarget(
        target="sglang.srt.managers.tokenizer_manager.TokenizerManager._send_one_request",
        hook="sglang_tokenweave.glue.determinism.tokenizer_side:assign_choice_seed",
        kind="before",
        feature="deterministic_requests",
        why="give each choice of an n > 1 deterministic request its own derived seed",
    ),
    PatchTarget(
        target="sglang.srt.managers.scheduler.Scheduler.__init__",
        hook="sglang_tokenweave.glue.determinism.scheduling:prepare_scheduler",
        kind="before",
        feature="deterministic_requests",
        why="turn off mixed chunked prefill (logged); keep the overlap scheduler, or turn it off where its loop is not SGLang's event_loop_overlap (logged)",
    ),
    PatchTarget(
        target="sglang.srt.managers.scheduler.Scheduler.__init__",
        hook="sglang_tokenweave.glue.determinism.scheduling:start_metrics",
        kind="after",
        feature="deterministic_requests",
        why="register the deterministic-serving counters on SGLang's Prometheus endpoint",
    ),
    PatchTarget(
        target="sglang.srt.managers.scheduler.Scheduler.on_idle",
        hook="sglang_tokenweave.glue.determinism.metrics_export:report_idle_pool",
        kind="after",
        feature="deterministic_requests",
        why="publish the idle KV pool's free size, so tests can check that rollbacks free every slot",
    ),
    PatchTarget(
        target="sglang.srt.managers.schedule_batch.Req.__init__",
        hook="sglang_tokenweave.glue.determinism.scheduling:track_deterministic_req",
        kind="after",
        feature="deterministic_requests",
        why="know whether any deterministic request is alive, so that the per-step hooks cost nothing without one",
    ),
    PatchTarget(
        target="sglang.srt.managers.scheduler.Scheduler.handle_generate_request",
        hook="sglang_tokenweave.glue.determinism.scheduler_guard:refuse_unreplayable",
        kind="around",
        feature="deterministic_requests",
        why="refuse (HTTP 400) a marked request that the HTTP layer did not validate, or that the verifier cannot "
        "replay (the same rules, on SGLang's own request); aborted as prompt_guard aborts",
    ),
    PatchTarget(
        target="sglang.srt.managers.scheduler.Scheduler.get_next_batch_to_run",
        hook="sglang_tokenweave.glue.determinism.scheduling:verify_before_scheduling",
        kind="around",
        feature="deterministic_requests",
        why="run due verification passes (commit / roll back) before the next batch is chosen; in the overlap loop, process the steps in flight first, only when a pass is due",
    ),
    PatchTarget(
        target="sglang.srt.managers.scheduler.Scheduler._get_new_batch_prefill_raw",
        hook="sglang_tokenweave.glue.determinism.scheduling:isolate_deterministic_prefill",
        kind="around",
        feature="deterministic_requests",
        why="a deterministic prefill runs alone, so its shape never depends on load",
    ),
    PatchTarget(
        target="sglang.srt.managers.scheduler.Scheduler.stash_chunked_request",
        hook="sglang_tokenweave.glue.determinism.scheduling:stash_own_chunk",
        kind="around",
        feature="deterministic_requests",
        why="a deterministic chunked prefill continues on its own KV, never the shared prefix cache",
    ),
    PatchTarget(
        target="sglang.srt.managers.scheduler.Scheduler.run_batch",
        hook="sglang_tokenweave.glue.determinism.sampling_hooks:note_batch_rows",
        kind="before",
        feature="deterministic_requests",
        why="note the deterministic rows of the batch and their (seed, position) keys for the sampler",
    ),
    PatchTarget(
        target="sglang.srt.mem_cache.memory_pool.ReqToTokenPool.alloc",
        hook="sglang_tokenweave.glue.determinism.sampling_hooks:leave_row_table",
        kind="after",
        feature="deterministic_requests",
        why="a request row given to another request loses the deterministic sampling parameters kept there",
    ),
    PatchTarget(
        target="sglang.srt.layers.sampler.Sampler.forward",
        hook="sglang_tokenweave.glue.determinism.sampling_hooks:sample_deterministic_rows",
        kind="around",
        feature="deterministic_requests",
        why="sample deterministic rows with the batch-invariant seeded sampler the verifier also uses",
    ),
    PatchTarget(
        target="sglang.srt.layers.logits_processor.LogitsProcessor._compute_lm_head",
        hook="sglang_tokenweave.glue.determinism.lm_head:compute_lm_head",
        kind="around",
        feature="deterministic_requests",
        why="float32 logits (--deterministic-logits): bf16-rounded logits turn last-bit differences "
        "between the fast path and the verifier into whole rounding steps, and so into rollbacks",
    ),
    PatchTarget(
        target="sglang.srt.layers.logits_processor.LogitsProcessor._get_pruned_states",
        hook="sglang_tokenweave.glue.determinism.sampling_hooks:keep_every_position",
        kind="around",
        feature="deterministic_requests",
        why="the verification pass needs logits at every position of its windows",
    ),
    PatchTarget(
        target="sglang.srt.managers.schedule_batch.Req.init_next_round_input",
        hook="sglang_tokenweave.glue.determinism.scheduling:no_prefix_reuse",
        kind="around",
        feature="deterministic_requests",
        why="no prefix-cache reuse (nor insertion) for deterministic requests",
    ),
    PatchTarget(
        target="sglang.srt.managers.schedule_batch.Req.update_finish_state",
        hook="sglang_tokenweave.glue.determinism.scheduling:finish_on_committed",
        kind="around",
        feature="deterministic_requests",
        why="finish checks on committed tokens only; a fast-path finish just makes the request due for verification",
    ),
    PatchTarget(
        target="sglang.srt.managers.schedule_batch.Req.reset_for_retract",
        hook="sglang_tokenweave.glue.determinism.scheduling:restart_on_retract",
        kind="after",
        feature="deterministic_requests",
        why="a retracted deterministic request restarts from its prompt without resending what the client has",
    ),
    PatchTarget(
        target="sglang.srt.managers.scheduler_components.output_streamer.SchedulerOutputStreamer.stream_output",
        hook="sglang_tokenweave.glue.determinism.scheduling:stream_committed_only",
        kind="around",
        feature="deterministic_requests",
        why="only committed tokens of a deterministic request are ever streamed",
    ),

    # --- internals the glue calls directly (kind "called": resolved at start-up, never registered) ---
    *(
        PatchTarget(target=target, hook=caller, kind=CALLED, feature=feature, why=why)
        for target, caller, feature, why in (
            ("sglang.srt.managers.schedule_batch.Req", "sglang_tokenweave.glue.scheduler_abort:abort_request",
             "core", "a refused request is a Req finished with a bad-request abort, as SGLang refuses one"),
            ("sglang.srt.model_executor.model_runner_components.attention_backend_setup._build_backend_from_str",
             "sglang_tokenweave.glue.overlap.split_batch:new_attention_backend", "tokenweave",
             "each token split has its own attention backend (its own forward metadata)"),
            ("sglang.srt.batch_overlap.two_batch_overlap.TboForwardBatchPreparer.filter_batch",
             "sglang_tokenweave.glue.overlap.split_batch:child_batch", "tokenweave",
             "a split's ForwardBatch, cut as two-batch overlap cuts one"),
            ("sglang.srt.model_executor.forward_context.forward_context",
             "sglang_tokenweave.glue.overlap.split_batch:split_attention_scope", "tokenweave",
             "a split's attention runs with its own backend in the forward context"),
            ("sglang.srt.model_executor.forward_context.get_forward_context",
             "sglang_tokenweave.glue.overlap.split_batch:split_attention_scope", "tokenweave",
             "the forward context a split's context is copied from"),
            ("sglang.srt.model_executor.runner_utils.capture_mode.get_is_capture_mode",
             "sglang_tokenweave.glue.overlap.hooks:_capturing", "tokenweave",
             "no rendezvous (growing the fused ops) inside a CUDA graph capture"),
            ("sglang.srt.runtime_context.get_forward", "sglang_tokenweave.glue.overlap.hooks:_without_allreduce",
             "tokenweave", "SGLang's own path without the MLP's all-reduce, when the fused op does it"),
            ("sglang.srt.distributed.parallel_state.get_tp_group",
             "sglang_tokenweave.glue.overlap.runner_setup:setup_runner", "tokenweave",
             "the TP group the fused ops are built on and the decision is agreed in"),
            ("sglang.srt.distributed.parallel_state.in_the_same_node_as",
             "sglang_tokenweave.glue.overlap.runner_setup:_facts", "tokenweave",
             "the fused op needs every rank on one node"),
            ("sglang.srt.distributed.parallel_state.get_tp_group",
             "sglang_tokenweave.glue.overlap.bench_paths:_tp_setup", "bench_paths",
             "benchmarks report which custom all-reduce the TP group built"),
            *(
                (f"sglang.srt.distributed.{name}", "sglang_tokenweave.glue.overlap.allreduce_dispatch:record_dispatch",
                 "bench_paths", "benchmarks record which all-reduce path each call took")
                for name in (
                    "parallel_state.GroupCoordinator.all_reduce",
                    "device_communicators.custom_all_reduce_v2.CustomAllReduceV2.custom_all_reduce",
                    "device_communicators.custom_all_reduce.CustomAllreduce.custom_all_reduce",
                    "device_communicators.pynccl.PyNcclCommunicator.all_reduce",
                    "device_communicators.pynccl.PyNcclCommunicator.outplace_all_reduce",
                    "device_communicators.torch_symm_mem.TorchSymmMemCommunicator.all_reduce",
                    "device_communicators.pymscclpp.PyMscclppCommunicator.all_reduce",
                )
            ),
            ("sglang.srt.managers.schedule_batch.ScheduleBatch.init_new",
             "sglang_tokenweave.glue.determinism.verifier:_run_pass", "deterministic_requests",
             "the verification pass is a ScheduleBatch of its own"),
            ("sglang.srt.model_executor.forward_batch_info.ForwardBatch.init_new",
             "sglang_tokenweave.glue.determinism.verifier:_run_pass", "deterministic_requests",
             "the verification pass's ForwardBatch"),
            ("sglang.srt.mem_cache.common.release_kv_cache", "sglang_tokenweave.glue.determinism.verifier:_apply",
             "deterministic_requests", "a request finished by the verifier frees its KV cache as SGLang does"),
            ("sglang.srt.layers.logits_processor.should_apply_lm_head_quant_method",
             "sglang_tokenweave.glue.determinism.lm_head:_plain_weight", "deterministic_requests",
             "float32 logits only for a plain (unquantized) LM head"),
            ("sglang.srt.mem_cache.base_prefix_cache.zero_match_result",
             "sglang_tokenweave.glue.determinism.scheduling:_NoMatch", "deterministic_requests",
             "a deterministic request's prefix lookup matches nothing"),
            # --deterministic-verify-graph full: the pass as one TARGET_VERIFY graph (verify_graph.py)
            *(
                (f"sglang.srt.{target}", f"sglang_tokenweave.glue.determinism.verify_graph:{caller}",
                 "deterministic_requests", why)
                for target, caller, why in (
                    ("model_executor.runner.decode_cuda_graph_runner.DecodeCudaGraphRunner", "_runner_class",
                     "the full-graph pass's runner is SGLang's decode-family graph runner, capturing TARGET_VERIFY"),
                    ("model_executor.runner.decode_cuda_graph_runner.DecodeCudaGraphRunner.capture", "_runner_class",
                     "overridden: TARGET_VERIFY mode and a full graph backend, then SGLang's capture"),
                    ("model_executor.runner.decode_cuda_graph_runner.DecodeCudaGraphRunner.get_spec_info",
                     "_runner_class", "overridden: the capture's verify input is the pass's causal block of W tokens"),
                    ("model_executor.runner.decode_cuda_graph_runner.DecodeCudaGraphRunner.can_run_graph",
                     "run_full_graph", "a pass the runner refuses fails loudly, never runs on another path"),
                    ("model_executor.runner.decode_cuda_graph_runner.DecodeCudaGraphRunner.execute", "run_full_graph",
                     "a pass: static inputs filled, attention planned, the graph replayed"),
                    ("model_executor.runner.decode_cuda_graph_runner.get_batch_sizes_to_capture", "build_runner",
                     "replaced while the runner is built: the one batch size B"),
                    ("model_executor.model_runner.ModelRunner.decode_num_tokens_per_req", "build_runner",
                     "replaced on the model runner while the runner is built: the capture width W"),
                    ("model_executor.graph_shared_output.GraphSharedOutput", "build_runner",
                     "the pass's own logits buffer of B x W rows (the shared one is sized for the decode graphs)"),
                    ("model_executor.runner_utils.buffers.DecodeInputBuffers.share_buffers", "build_runner",
                     "a no-op while the runner is built: its static inputs stay out of SGLang's process-wide pool"),
                    ("model_executor.runner_backend.full_cuda_graph_backend.FullCudaGraphBackend", "_runner_class",
                     "the whole pass as one CUDA graph, whatever the server's decode graph backend"),
                    ("model_executor.model_runner_components.attention_backend_setup._build_backend_from_str",
                     "_own_attention_backend", "the pass's graph has a Triton attention backend of its own"),
                    ("layers.attention.triton_backend.TritonAttnBackend.init_cuda_graph_state",
                     "_own_attention_backend", "given a KV-index buffer of B x context length (one prefix per row)"),
                    ("layers.attention.triton_backend.TritonAttnBackend._update_target_verify_buffers",
                     "verify_input", "reads the rows' width from the verify input's draft_token_num"),
                    ("speculative.dflash_info.DFlashVerifyInput", "verify_input",
                     "TARGET_VERIFY input of a causal block of W tokens per row, logits at every one"),
                )
            ),
        )
    ),
)
