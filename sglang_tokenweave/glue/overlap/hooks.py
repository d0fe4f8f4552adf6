"""The hook functions the patch table registers for feature "tokenweave".

- ``after_attention_backends``: once per model runner, decide and build (see ``runner_setup``).
- ``model_forward``: around ``LlamaModel.forward`` / ``Qwen2Model.forward`` (Qwen3 inherits
  it): plan once, then run the woven decoder; anything it does not handle goes to SGLang.
- ``prefill_graph_admits``: around ``PrefillCudaGraphRunner.can_run_graph``: a batch whose
  plan splits runs eagerly (a captured graph replays one fixed schedule without splits).
"""

from __future__ import annotations

import torch

from sglang_tokenweave.glue import process_state
from sglang_tokenweave.glue.overlap.runner_setup import STATE_ATTR, WeaveState, decoder_stack, setup_runner
from sglang_tokenweave.glue.overlap.split_batch import split_attention_scope
from sglang_tokenweave.overlap import SplitPlan, plan_forward
from sglang_tokenweave.overlap.weave import SplitState, run_decoder


def after_attention_backends(result, model_runner, *args, **kwargs):
    setup_runner(model_runner, process_state.overlay_config())
    return None


def model_forward(original, model, input_ids, positions, forward_batch, input_embeds=None,
                  pp_proxy_tensors=None, *args, **kwargs):
    state = getattr(model, STATE_ATTR, None)
    if state is not None and state.config.tokenweave_bench_skip_allreduce:
        return _without_allreduce(original, model, input_ids, positions, forward_batch, input_embeds,
                                  pp_proxy_tensors, *args, **kwargs)
    out = None
    if state is not None and pp_proxy_tensors is None and not args and not kwargs and not model.layers_to_capture:
        out = _woven_forward(model, state, input_ids, positions, forward_batch, input_embeds)
    if out is None:
        return original(model, input_ids, positions, forward_batch, input_embeds, pp_proxy_tensors, *args, **kwargs)
    return out


def prefill_graph_admits(original, graph_runner, forward_batch, *args, **kwargs):
    model = decoder_stack(graph_runner.model_runner)
    state = getattr(model, STATE_ATTR, None) if model is not None else None
    if state is not None:
        num_tokens = len(forward_batch.input_ids)
        setting = _setting(state, num_tokens)
        if setting.use_fused and _plan(state, forward_batch, num_tokens, setting, capturing=False).is_split:
            return False
    return original(graph_runner, forward_batch, *args, **kwargs)


def _without_allreduce(original, model, *args, **kwargs):
    """SGLang's own forward with every row-parallel all-reduce skipped (benchmark bound only:
    the outputs are wrong). Uses the flag SGLang's decoders publish when a later fused norm
    absorbs the all-reduce."""
    from sglang.srt.runtime_context import get_forward

    with get_forward().scoped(fuse_mlp_allreduce=True):
        return original(model, *args, **kwargs)


# --- plan ---------------------------------------------------------------------------------


def _setting(state: WeaveState, num_tokens: int):
    cfg = state.config
    return state.table.lookup(state.key, num_tokens, split_threshold=cfg.tokenweave_split_threshold,
                              sm_budget=cfg.tokenweave_sm_budget, fused_threshold=cfg.tokenweave_fused_threshold)


def _capturing(state: WeaveState) -> bool:
    from sglang.srt.model_executor.runner_utils.capture_mode import get_is_capture_mode

    return get_is_capture_mode() or (state.on_cuda and torch.cuda.is_current_stream_capturing())


def _plan(state: WeaveState, forward_batch, num_tokens: int, setting, capturing: bool) -> SplitPlan:
    """The split plan: a function of host-side integers every TP rank holds identically."""
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    extend_lens = forward_batch.extend_seq_lens_cpu
    prefix_lens = forward_batch.extend_prefix_lens_cpu
    splittable = (
        not capturing
        and forward_batch.forward_mode in (ForwardMode.EXTEND, ForwardMode.MIXED)
        and extend_lens is not None
        and prefix_lens is not None
        and sum(extend_lens) == num_tokens  # cutting a padded batch is not supported
    )
    if not splittable:
        return plan_forward([num_tokens], [0], world_size=state.world_size, threshold=None)
    return plan_forward(extend_lens, prefix_lens, world_size=state.world_size,
                        threshold=setting.split_threshold, split_offset=setting.split_offset,
                        num_tokens=num_tokens)


# --- run ----------------------------------------------------------------------------------


def _woven_forward(model, state: WeaveState, input_ids, positions, forward_batch, input_embeds):
    num_tokens = input_ids.shape[0] if input_embeds is None else input_embeds.shape[0]
    if num_tokens == 0:
        return None
    setting = _setting(state, num_tokens)
    capturing = _capturing(state)
    if not setting.use_fused:
        where = f"tuned bucket {setting.bucket}" if setting.bucket is not None else \
            f"{setting.source}, tp={state.world_size}"
        state.note_once(f"unfused-{where}", f"SGLang's all-reduce + RMSNorm kept for {num_tokens}-token "
                                            f"batches ({where})")
        state.note_path(num_tokens, "sglang", capturing)
        return None
    if num_tokens > state.capacity:
        if capturing:  # a rendezvous cannot run inside a graph capture
            state.note_once("capture-capacity", f"batch of {num_tokens} rows captured with SGLang's path")
            state.note_path(num_tokens, "sglang", capturing)
            return None
        state.make_ops(_round_up(num_tokens, 1024))
        state.note_once(f"capacity-{state.capacity}", f"fused ops grown to {state.capacity} rows")
    plan = _plan(state, forward_batch, num_tokens, setting, capturing)

    # Layer 0 as in SGLang: the residual is the embedding, the first norm a plain RMSNorm.
    residual = model.embed_tokens(input_ids) if input_embeds is None else input_embeds.clone()
    residual = residual.contiguous()
    hidden = model.layers[model.start_layer].input_layernorm(residual)

    parts = _split_parts(state, plan, forward_batch, positions, residual, hidden) if plan.is_split else None
    if parts is None:
        parts = [SplitState(state.ops[0], slice(0, num_tokens), num_tokens, forward_batch, None,
                            positions, residual, hidden)]
    num_blocks = None if setting.source == "defaults" else setting.sm_budget
    carveout = setting.sm_budget if setting.gemm_carveout else 0
    run_decoder(model, parts, _comm_stream(state) if len(parts) > 1 else None, num_blocks, carveout=carveout,
                attention_scope=split_attention_scope)
    state.note_path(num_tokens, "split" if len(parts) > 1 else "fuse-only", capturing)

    if len(parts) > 1:
        return torch.cat([p.hidden for p in parts])
    out = parts[0].hidden  # a view of the fused op's buffer: the next forward overwrites it
    if forward_batch.capture_hidden_mode is not None and forward_batch.capture_hidden_mode.need_capture():
        out = out.clone()
    return out


def _split_parts(state: WeaveState, plan: SplitPlan, forward_batch, positions, residual, hidden):
    from sglang_tokenweave.glue.overlap.split_batch import child_batch, new_attention_backend

    try:
        batches = [child_batch(forward_batch, split) for split in plan.splits]
        if state.split_backends is None:
            state.split_backends = [new_attention_backend(state.runner()) for _ in plan.splits]
        for backend, batch in zip(state.split_backends, batches):
            backend.init_forward_metadata(batch)
    except Exception as error:  # SGLang could not cut this batch: run it whole (same result)
        state.note_once(f"uncut-{type(error).__name__}", f"batch run without splitting: {error}"[:300])
        return None
    parts = []
    for split, op, batch, backend in zip(plan.splits, state.ops, batches, state.split_backends):
        rows = split.token_slice
        parts.append(SplitState(op, rows, split.num_tokens, batch, backend, positions[rows], residual[rows],
                                hidden[rows]))
    state.note_once("split", f"token splitting active (first split: {plan.num_tokens} rows cut at {plan.cut})")
    a, b = plan.splits
    if a.pieces and b.pieces and a.pieces[-1].request == b.pieces[0].request:
        state.note_once("straddle", f"a request straddled a split point ({plan.num_tokens} rows cut at {plan.cut})")
    return parts


def _comm_stream(state: WeaveState):
    if not state.on_cuda:
        return None
    if state.comm_stream is None:
        state.comm_stream = torch.cuda.Stream(priority=-1)  # high priority: comm is on the critical path
    return state.comm_stream


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple
