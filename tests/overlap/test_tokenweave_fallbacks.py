"""Which processes keep SGLang's own path, and the reason each one logs."""

import pytest

from sglang_tokenweave.overlap.fallbacks import SUPPORTED_LAYERS, ProcessFacts, fallback_reason

LLAMA = ("LlamaDecoderLayer",) * 4


def facts(**changes):
    base = dict(tp_size=2, layer_types=LLAMA)
    return ProcessFacts(**{**base, **changes})


@pytest.mark.parametrize("layer", SUPPORTED_LAYERS)
def test_dense_supported_models_run(layer):
    assert fallback_reason(facts(layer_types=(layer,) * 3)) is None


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(tp_size=1), "tensor parallel size is 1"),
        (dict(tp_size=3), "tensor parallel size is 3: the fused CUDA kernel serves TP 2, 4, 8"),
        (dict(tp_size=6), "tensor parallel size is 6"),
        (dict(nnodes=2), "spans nodes"),
        (dict(tp_in_one_node=False), "spans nodes"),
        (dict(peer_access=False), "no peer access"),
        (dict(pp_size=2), "pipeline parallelism"),
        (dict(layer_types=("LlamaDecoderLayer", "sglang.srt.models.x.MoELayer")), "unsupported model (sglang.srt.models.x.MoELayer)"),
        (dict(layer_types=()), "no decoder layers"),
        (dict(norms_plain=False), "RMSNorm variant"),
        (dict(linears_write_into=False), "quantized linear layers"),
        (dict(captures_aux_hidden=True), "auxiliary hidden states"),
        (dict(other_flags=("--enable-dp-attention",)), "--enable-dp-attention"),
    ],
)
def test_each_fallback_names_its_reason(changes, words):
    reason = fallback_reason(facts(**changes))
    assert reason is not None and words in reason


@pytest.mark.parametrize("tp", (3, 5, 6, 7))
def test_any_tp_size_runs_off_cuda(tp):
    assert fallback_reason(facts(tp_size=tp, on_cuda=False)) is None


def test_cuda_world_sizes_are_the_fused_ops():
    from sglang_tokenweave.comm.fused_ar_norm import SUPPORTED_WORLD_SIZES
    from sglang_tokenweave.overlap.fallbacks import CUDA_KERNEL_WORLD_SIZES

    assert CUDA_KERNEL_WORLD_SIZES == SUPPORTED_WORLD_SIZES


def test_peer_access_only_matters_on_cuda():
    assert fallback_reason(facts(on_cuda=False, peer_access=False)) is None


def test_first_reason_wins():
    # TP = 1 is what a user must fix first, whatever else is wrong.
    reason = fallback_reason(facts(tp_size=1, nnodes=2, linears_write_into=False))
    assert reason.startswith("tensor parallel size is 1")
