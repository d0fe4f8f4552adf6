"""The tuner's choice per bucket, the GEMM carve-out switch and the kernel-trace summary
(pure CPU; the timings themselves come from the GPU machine)."""

import gzip
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import trace_kernels  # noqa: E402
import tune_tokenweave  # noqa: E402

from sglang_tokenweave.overlap import gemm_carveout as carveout_module  # noqa: E402


def _row(unfused, fused, split):
    return {"tokens": 4096, "unfused_us": unfused, "no_comm_us": 1.0, "fused": fused, "split": split}


def test_tuner_takes_the_fastest_split_with_its_carveout():
    bucket = tune_tokenweave._choose(_row(100.0, {8: 90.0, 16: 95.0}, {"0:8:0": 85.0, "256:16:1": 80.0}))
    assert (bucket.use_split, bucket.split_offset, bucket.sm_budget, bucket.gemm_carveout) == (True, 256, 16, True)


def test_tuner_keeps_the_whole_batch_when_splitting_loses():
    bucket = tune_tokenweave._choose(_row(100.0, {8: 90.0, 16: 80.0}, {"0:8:1": 85.0}))
    assert (bucket.use_split, bucket.sm_budget, bucket.use_fused, bucket.gemm_carveout) == (False, 16, True, False)


def test_tuner_keeps_sglangs_path_when_fusing_loses():
    bucket = tune_tokenweave._choose(_row(70.0, {8: 90.0}, {"0:8:0": 60.0}))
    assert not bucket.use_fused and not bucket.use_split


def test_carveout_sets_and_restores_torch_state(monkeypatch):
    calls = []
    state = {"carveout": None, "library": "cublas"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch._C, "_get_sm_carveout_experimental", lambda: state["carveout"])
    monkeypatch.setattr(torch._C, "_set_sm_carveout_experimental", lambda n: calls.append(("carveout", n)) or
                        state.update(carveout=n))

    def library(name=None):
        if name is None:
            return state["library"]
        calls.append(("library", name))
        state["library"] = name
        return name

    monkeypatch.setattr(torch.backends.cuda, "preferred_blas_library", library)
    with pytest.raises(RuntimeError):
        with carveout_module.gemm_carveout(16):
            assert state == {"carveout": 16, "library": "cublaslt"}
            raise RuntimeError("inside")
    assert state == {"carveout": None, "library": "cublas"}  # restored on the way out, error or not
    calls.clear()
    with carveout_module.gemm_carveout(0):
        pass
    assert calls == []


def _kernel(name, ts, dur, stream):
    return {"cat": "kernel", "name": name, "ts": ts, "dur": dur, "args": {"stream": stream}}


def test_trace_summary_classes_streams_and_overlap(tmp_path):
    events = [
        _kernel("sm90_xmma_gemm_bf16bf16_bf16f32", 0, 100, 7),
        _kernel("ar_norm_kernel<bf16, 4>", 50, 100, 20),  # overlaps the GEMM by 50
        _kernel("_fwd_kernel_extend_attention", 150, 30, 7),
        _kernel("vectorized_elementwise_kernel", 200, 10, 7),
        {"cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 500},
    ]
    path = tmp_path / "t.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)
    summary = trace_kernels.summarize(trace_kernels.load_kernels(str(path)))
    assert summary["span_us"] == 210
    assert summary["busy_us"] == 190  # 0-180 and 200-210
    assert summary["streams"] == {"7": 140, "20": 100}
    assert summary["classes"] == {"gemm": 100, "comm_fused": 100, "attention": 30, "other": 10}
    assert summary["top"][0]["count"] == 1
    text = trace_kernels.format_summary(summary, "x")
    assert "span 210 us" in text and "comm_fused" in text
