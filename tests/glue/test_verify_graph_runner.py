"""The full-graph verification pass on CPU: what the runner is built with and that the server's
state comes back, its capture mode and verify input, the first-pass choice and its report,
loud failures, and the pass's device inputs. (Capture and replay themselves need a GPU:
tests/gpu/test_verify_full_graph_gpu.py.)"""

import re
from types import SimpleNamespace

import pytest
import torch

from sglang_tokenweave.determinism.verify_graph import pass_layout
from sglang_tokenweave.glue.determinism import verifier, verify_forward, verify_graph

ROWS, WINDOW = 8, 32


@pytest.fixture
def statuses(monkeypatch):
    """What the module reports: feature statuses and published entries."""
    seen = {"features": {}, "published": {}}
    monkeypatch.setattr(verify_graph.report, "set_feature_status",
                        lambda feature, active, reason: seen["features"].__setitem__(feature, (active, reason)))
    monkeypatch.setattr(verify_graph.report, "publish", lambda key, value: seen["published"].__setitem__(key, value))
    free = iter([3 << 30, (3 << 30) - (40 << 20)])  # 40 MiB taken by the capture
    monkeypatch.setattr(verify_graph.torch.cuda, "mem_get_info", lambda: (next(free), 4 << 30))
    return seen


class ServerModelRunner:
    """The server's model runner, as far as building the pass's runner touches it."""

    device = "cpu"

    def __init__(self):
        self.graph_shared_output = "the server's logits buffer"

    def decode_num_tokens_per_req(self, *, num_draft_tokens=None):
        return 1  # no speculative decoding


def test_the_runner_is_built_for_the_pass_shape_and_the_server_gets_its_state_back(monkeypatch):
    from sglang.srt.model_executor.input_buffers import ForwardInputBuffers
    from sglang.srt.model_executor.runner import decode_cuda_graph_runner
    from sglang.srt.model_executor.runner_utils.buffers import DecodeInputBuffers

    original_sizes = decode_cuda_graph_runner.get_batch_sizes_to_capture
    seen = {}

    class Runner:
        def __init__(self, model_runner, *, attn_backend, speculative_num_draft_tokens):
            seen.update(
                width=model_runner.decode_num_tokens_per_req(num_draft_tokens=speculative_num_draft_tokens),
                sizes=decode_cuda_graph_runner.get_batch_sizes_to_capture(model_runner, WINDOW),
                logits_rows=model_runner.graph_shared_output.get_logits_buffer(50, rows=ROWS * WINDOW).shape,
                pooled=DecodeInputBuffers.share_buffers is ForwardInputBuffers.share_buffers,
                backend=attn_backend, draft_tokens=speculative_num_draft_tokens)
            if model_runner.fail:
                raise RuntimeError("capture failed")

    monkeypatch.setattr(verify_graph, "_own_attention_backend", lambda model_runner, rows: f"own backend, {rows} rows")
    monkeypatch.setattr(verify_graph, "_runner_class", lambda: Runner)
    for fail in (False, True):
        model_runner = ServerModelRunner()
        model_runner.fail = fail
        if fail:
            with pytest.raises(RuntimeError, match="capture failed"):
                verify_graph.build_runner(model_runner, ROWS, WINDOW)
        else:
            assert isinstance(verify_graph.build_runner(model_runner, ROWS, WINDOW), Runner)
        assert seen == dict(width=WINDOW, sizes=([ROWS], []), logits_rows=(ROWS * WINDOW, 50), pooled=False,
                            backend=f"own backend, {ROWS} rows", draft_tokens=WINDOW)
        # everything swapped while building is the server's again, failure or not
        assert model_runner.decode_num_tokens_per_req() == 1 and "decode_num_tokens_per_req" not in vars(model_runner)
        assert model_runner.graph_shared_output == "the server's logits buffer"
        assert decode_cuda_graph_runner.get_batch_sizes_to_capture is original_sizes
        assert "share_buffers" not in vars(DecodeInputBuffers)
        seen.clear()


def test_the_runner_captures_target_verify_in_one_full_graph(monkeypatch):
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardMode
    from sglang.srt.model_executor.runner.decode_cuda_graph_runner import DecodeCudaGraphRunner
    from sglang.srt.model_executor.runner_backend.full_cuda_graph_backend import FullCudaGraphBackend

    cls = verify_graph._runner_class()
    assert issubclass(cls, DecodeCudaGraphRunner)
    runner = object.__new__(cls)  # SGLang's constructor captures: CUDA only
    runner.captured_req_width = WINDOW
    runner.capture_forward_mode = ForwardMode.DECODE  # what the constructor picks without speculative decoding
    runner.backend = "the server's decode graph backend"
    runner.device_module = torch.cuda
    runner.model_runner = SimpleNamespace(server_args=SimpleNamespace(enable_memory_saver=False), tp_group=None)
    captured = []
    monkeypatch.setattr(DecodeCudaGraphRunner, "capture",
                        lambda self: captured.append((self.capture_forward_mode, type(self.backend))))
    runner.capture()
    assert captured == [(ForwardMode.TARGET_VERIFY, FullCudaGraphBackend)]
    spec = runner.get_spec_info(ROWS * WINDOW)
    assert (spec.draft_token_num, spec.num_tokens_per_req) == (WINDOW, WINDOW)
    assert spec.custom_mask is None and spec.positions is None
    assert spec.capture_hidden_mode == CaptureHiddenMode.NULL


class FakeRunner:
    def __init__(self, accepts=True):
        self.accepts, self.executed = accepts, []

    def can_run_graph(self, forward_batch):
        return self.accepts

    def execute(self, forward_batch):
        self.executed.append(forward_batch)
        return SimpleNamespace(next_token_logits=f"logits of {forward_batch}")


def test_the_first_pass_captures_reports_and_later_passes_replay(monkeypatch, fresh_runtime, statuses):
    rt = fresh_runtime(verify_graph="full")
    runner, builds = FakeRunner(), []
    monkeypatch.setattr(verify_graph, "build_runner", lambda *args: builds.append(args[1:]) or runner)
    assert verify_graph.run_full_graph("model runner", "pass 1", ROWS, WINDOW) == "logits of pass 1"
    assert verify_graph.run_full_graph("model runner", "pass 2", ROWS, WINDOW) == "logits of pass 2"
    assert builds == [(ROWS, WINDOW)] and runner.executed == ["pass 1", "pass 2"]
    assert rt.verify_graph is True and rt.verify_runner is runner
    active, reason = statuses["features"][verify_graph.FEATURE]
    assert active and "256-token passes (8 rows x 32 tokens) replay one full CUDA graph" in reason
    assert "40 MiB" in reason
    captured = statuses["published"][verify_graph.CAPTURE_REPORT]
    assert (captured["rows"], captured["window"], captured["mode"], captured["device_memory_mib"]) == (
        ROWS, WINDOW, "TARGET_VERIFY", 40.0)
    runner.accepts = False
    with pytest.raises(RuntimeError, match="refused a pass of its own shape"):
        verify_graph.run_full_graph("model runner", "pass 3", ROWS, WINDOW)


def test_a_failed_capture_is_reported_and_fails_loudly(monkeypatch, fresh_runtime, statuses):
    rt = fresh_runtime(verify_graph="full")

    def fail(*args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(verify_graph, "build_runner", fail)
    with pytest.raises(RuntimeError, match="could not capture its graph .OutOfMemoryError: CUDA out of memory"):
        verify_graph.run_full_graph("model runner", "pass 1", ROWS, WINDOW)
    active, reason = statuses["features"][verify_graph.FEATURE]
    assert not active and "--deterministic-verify-graph full could not capture" in reason
    assert rt.verify_graph is False and rt.verify_runner is None
    with pytest.raises(RuntimeError, match="failed to capture at the first pass"):  # never another path
        verify_graph.run_full_graph("model runner", "pass 2", ROWS, WINDOW)


@pytest.mark.parametrize("path", ["full", "breakable"])
def test_a_pass_takes_the_configured_path(monkeypatch, fresh_runtime, path):
    fresh_runtime(verify_graph=path)
    monkeypatch.setattr(verify_forward, "run_full_graph", lambda mr, fb, rows, window: ("full", rows, window))
    monkeypatch.setattr(verify_forward, "run_forward",
                        lambda mr, fb: SimpleNamespace(logits_output=SimpleNamespace(next_token_logits="breakable")))
    expected = ("full", ROWS, WINDOW) if path == "full" else "breakable"
    assert verify_forward.pass_logits("model runner", "batch", ROWS, WINDOW) == expected


def test_pass_inputs_carry_positions_only_for_the_full_graph():
    window, prefixes, real = 4, [3, 0], [4, 2]
    ids = [11, 12, 13, 14, 21, 22, 0, 0]
    outputs = {}
    for full in (True, False):
        pool = SimpleNamespace(req_to_token=torch.arange(1000, 1000 + 3 * 16).reshape(3, 16), device="cpu")
        layout = pass_layout(prefixes, window, full)
        inputs = verifier._PassInputs(pool, window, ids, [1, 2], prefixes, real, layout.seq_lens, layout.positions)
        assert inputs.seq_lens.tolist() == layout.seq_lens
        assert (inputs.positions is None) == (not full)
        outputs[full] = (inputs.input_ids.tolist(), inputs.pool_rows.tolist(), inputs.row_starts.tolist(),
                         inputs.out_cache_loc.tolist())
        if full:
            assert inputs.positions.tolist() == [3, 4, 5, 6, 0, 1, 2, 3]
    # the slots written and the rest of the inputs do not depend on the path
    assert outputs[True] == outputs[False] == (ids, [1, 2], prefixes,
                                               [1019, 1020, 1021, 1022, 1032, 1033, 0, 0])


@pytest.mark.parametrize("device, backend, message", [
    ("cpu", "torch_native", "needs CUDA GPUs (--device cpu)"),
    ("cuda", "fa3", "add --attention-backend triton"),
])
def test_a_scheduler_refuses_to_start_where_the_full_graph_cannot_serve(monkeypatch, fresh_runtime, statuses,
                                                                         device, backend, message):
    from sglang_tokenweave.glue.determinism import scheduling

    fresh_runtime(verify_graph="full", sampling_kernel="torch")
    server_args = SimpleNamespace(disable_overlap_schedule=True, enable_mixed_chunk=False, device=device,
                                  attention_backend=backend, prefill_attention_backend=None,
                                  decode_attention_backend=None)
    monkeypatch.setattr(scheduling.report, "set_feature_status",
                        lambda feature, active, reason: statuses["features"].__setitem__(feature, (active, reason)))
    with pytest.raises(ValueError, match=re.escape(message)):  # SGLang's own entry point (the launcher refuses first)
        scheduling.prepare_scheduler("scheduler", server_args)
    active, reason = statuses["features"][verify_graph.FEATURE]
    assert not active and message in reason


@pytest.mark.parametrize("device, backend, tp, graph", [
    ("cpu", "torch_native", 1, "breakable"),
    ("cuda", "triton", 1, "full"),
    ("cuda", "triton", 2, "breakable"),
    ("cuda", "fa3", 1, "breakable"),
])
def test_a_scheduler_resolves_auto_and_reports_the_graph(monkeypatch, fresh_runtime, statuses, device, backend,
                                                         tp, graph):
    from sglang_tokenweave.glue.determinism import scheduling

    rt = fresh_runtime(sampling_kernel="torch")  # --deterministic-verify-graph at its default, auto
    assert rt.config.verify_graph == "auto"
    server_args = SimpleNamespace(disable_overlap_schedule=True, enable_mixed_chunk=False, device=device,
                                  attention_backend=backend, prefill_attention_backend=None,
                                  decode_attention_backend=None, speculative_algorithm=None,
                                  enable_dp_attention=False, enable_two_batch_overlap=False, enable_lora=False,
                                  enable_pdmux=False, enable_deterministic_inference=False, pp_size=1, tp_size=tp)
    monkeypatch.setattr(scheduling.report, "set_feature_status",
                        lambda feature, active, reason: statuses["features"].__setitem__(feature, (active, reason)))
    scheduling.prepare_scheduler("scheduler", server_args)
    assert rt.config.verify_graph == graph
    active, reason = statuses["features"][scheduling.FEATURE]
    assert active and f"verify graph {graph} (auto: " in reason, reason
