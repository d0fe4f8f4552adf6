"""GPU smoke test of the launcher: a TP=2 server on the tiny model with a real SGLang, the overlay
reporting itself from both TP processes, /generate answering (run with ``pytest -m gpu``)."""

import pytest
import torch

from sglang_tokenweave.comm.multicast import MULTICAST_OFF_SWITCHES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs"),
]

# Multicast stays off (the test machines must never use it); the tiny model in bf16; SGLang's
# Triton attention and PyTorch sampling need no JIT-compiled FlashInfer kernels; everything else
# at SGLang's defaults.
GPU_ARGS = ["--tp", "2", "--dtype", "bfloat16", "--attention-backend", "triton", "--sampling-backend", "pytorch"]
SAFE_ENV = dict(MULTICAST_OFF_SWITCHES)  # SGLang at its defaults; NVLink multicast off


@pytest.fixture(scope="module")
def server(start_server):
    return start_server(GPU_ARGS, env=SAFE_ENV)


def test_overlay_active_in_both_tp_processes(server):
    processes = [p for p in server.get("/tokenweave/status").json()["processes"] if p["role"] == "scheduler"]
    assert sorted(p["tp_rank"] for p in processes) == [0, 1]
    for p in processes:
        assert p["device"] == "cuda"
        assert "sglang.srt.managers.scheduler.Scheduler.__init__" in p["hooks"]
        # the CPU-only hooks must not be applied on GPUs
        assert not any("rotary_embedding" in h for h in p["hooks"])


def test_generate_answers(server):
    body = {"text": "The capital of France is", "sampling_params": {"max_new_tokens": 16, "temperature": 0,
                                                                    "ignore_eos": True}}
    first = server.post("/generate", body).json()
    assert first["meta_info"]["completion_tokens"] == 16
    assert len(first["output_ids"]) == 16
    print("GPU smoke output_ids:", first["output_ids"])
    assert server.post("/generate", body).json()["output_ids"] == first["output_ids"]
