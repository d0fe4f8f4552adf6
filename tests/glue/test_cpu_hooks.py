"""The CPU hooks on their own: each rank's memory share, and the grammar bitmask on CPU tensors."""

import psutil
import pytest
import torch

from sglang_tokenweave.glue import cpu_grammar, cpu_support


@pytest.mark.parametrize(
    "tp, pp, dp, dp_attention, nnodes, ranks",
    [
        (1, 1, 1, False, 1, 1),
        (3, 1, 1, False, 1, 3),
        (2, 2, 1, False, 1, 4),
        (2, 1, 3, False, 1, 6),  # DP replicas each run their own TP ranks
        (4, 1, 4, True, 1, 4),  # DP attention runs inside the TP group
        (4, 1, 1, False, 2, 2),  # two machines, two ranks each
    ],
)
def test_ranks_sharing_memory(tp, pp, dp, dp_attention, nnodes, ranks):
    assert cpu_support.ranks_sharing_memory(tp, pp, dp, dp_attention, nnodes) == ranks


def _sglang_answer(*args, **kwargs):
    return "sglang"


def test_memory_share_is_sglangs_answer_outside_a_cpu_rank(monkeypatch):
    monkeypatch.setattr(cpu_support, "_ranks_on_machine", None)  # the launcher, not a TP worker
    assert cpu_support.rank_share_of_cpu_memory(_sglang_answer, "cpu", 0) == "sglang"
    monkeypatch.setattr(cpu_support, "_ranks_on_machine", 3)
    assert cpu_support.rank_share_of_cpu_memory(_sglang_answer, "cuda", 0) == "sglang"


@pytest.mark.parametrize("ranks", [1, 3])
def test_memory_share_divides_the_available_memory_among_the_ranks(monkeypatch, ranks):
    class Memory:
        available = 12 * (1 << 30)

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory)
    monkeypatch.setattr(cpu_support, "_ranks_on_machine", ranks)
    assert cpu_support.rank_share_of_cpu_memory(_sglang_answer, "cpu", 0) == pytest.approx(12 / ranks)


def test_bitmask_is_unpinned_and_allows_every_token():
    mask = cpu_grammar.allocate_bitmask_unpinned(vocab_size=100, batch_size=2)
    assert mask.device.type == "cpu" and not mask.is_pinned()
    assert mask.shape == (2, 4) and (mask == -1).all()  # 32 tokens per int32 word


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_bitmask_applies_to_cpu_logits(dtype):
    logits = torch.randn(2, 100).to(dtype)
    before = logits.clone()
    mask = cpu_grammar.allocate_bitmask_unpinned(vocab_size=100, batch_size=2)
    mask[0] = 0
    mask[0, 0] = 0b101  # row 0 allows tokens 0 and 2 only; row 1 allows every token

    def sglang_path(*args, **kwargs):
        raise AssertionError("SGLang's GPU path must not run on CPU logits")

    assert cpu_grammar.apply_bitmask_on_cpu(sglang_path, object(), logits=logits, vocab_mask=mask) is None
    allowed = torch.isfinite(logits[0]).nonzero().flatten().tolist()
    assert allowed == [0, 2]
    assert torch.equal(logits[0, [0, 2]], before[0, [0, 2]])
    assert torch.equal(logits[1], before[1])
