"""Seeded sampling and log-probabilities: correct, and a function of each row alone."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_tokenweave.determinism.logprobs import token_logprobs, top_logprobs
from sglang_tokenweave.determinism.perturbation import perturb_fast_path_logits
from sglang_tokenweave.determinism.sampling import RowParams, plan_sampling, sample, sample_at_batch_rows
from sglang_tokenweave.determinism.seeds import draw_keys, token_uniform

V = 512


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    # Tiny CPU tensors: thread start-up would cost far more than the work on a 2-core runner.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_params(draw_seed: int, position: int, generator: torch.Generator) -> RowParams:
    pick = torch.randint(0, 1 << 30, (5,), generator=generator).tolist()
    return RowParams(
        seed=draw_seed,
        position=position,
        temperature=[0.0, 0.3, 0.8, 1.0, 1.7][pick[0] % 5],
        top_p=[1.0, 0.95, 0.5, 0.1][pick[1] % 4],
        top_k=[-1, 1, 5, 40, V, 1 << 30][pick[2] % 6],
        min_p=[0.0, 0.0, 0.05, 0.3][pick[3] % 4],
    )


def run(logits, rows, device="cpu"):
    plan = plan_sampling(rows, logits.shape[1], device)
    tokens = sample(logits, plan)
    return tokens, token_logprobs(logits, plan, tokens), plan


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), batch=st.integers(1, 40), temperature=st.sampled_from([0.0, 0.8, 1.3]))
def test_row_result_independent_of_batch_composition_and_order(seed, batch, temperature):
    g = torch.Generator().manual_seed(seed)
    target_logits = torch.randn(1, V, generator=g) * 4
    target = RowParams(seed=seed, position=seed % 1000, temperature=temperature, top_p=0.9, top_k=60)
    alone_token, alone_lp, _ = run(target_logits, [target])

    others = torch.randn(batch, V, generator=g) * 4
    other_rows = [random_params(seed + i, i, g) for i in range(batch)]
    where = int(torch.randint(0, batch + 1, (1,), generator=g))
    logits = torch.cat([others[:where], target_logits, others[where:]])
    rows = other_rows[:where] + [target] + other_rows[where:]
    tokens, lps, _ = run(logits, rows)
    assert tokens[where] == alone_token[0]
    assert lps[where].item() == alone_lp[0].item()  # bit-identical, not just close

    order = torch.randperm(batch + 1, generator=g)
    shuffled_tokens, shuffled_lps, _ = run(logits[order], [rows[i] for i in order])
    assert torch.equal(shuffled_tokens, tokens[order])
    assert torch.equal(shuffled_lps, lps[order])


def test_greedy_is_argmax_with_lowest_index_on_ties():
    logits = torch.randn(6, V)
    logits[0, 10] = logits[0, 20] = 100.0
    rows = [RowParams(seed=1, position=i, temperature=0.0) for i in range(3)]
    rows += [RowParams(seed=1, position=i, temperature=0.9, top_k=1) for i in range(3)]
    tokens, _, _ = run(logits, rows)
    assert torch.equal(tokens, torch.argmax(logits, dim=-1))
    assert tokens[0] == 10


def test_same_key_same_token_and_keys_matter():
    logits = torch.randn(1, V).expand(200, V).contiguous()
    rows = [RowParams(seed=7, position=p, temperature=0.8) for p in range(200)]
    first, _, _ = run(logits, rows)
    again, _, _ = run(logits, rows)
    other_seed, _, _ = run(logits, [RowParams(seed=8, position=p, temperature=0.8) for p in range(200)])
    assert torch.equal(first, again)
    assert len(set(first.tolist())) > 20  # positions draw different numbers
    assert (first != other_seed).float().mean() > 0.5  # so do seeds


def test_frequencies_match_the_distribution():
    n, vocab, temperature = 40000, 6, 0.8
    logits = torch.tensor([[1.0, 0.5, -0.2, 2.0, 0.0, -3.0]])
    rows = [RowParams(seed=11, position=p, temperature=temperature) for p in range(n)]
    tokens, _, _ = run(logits.expand(n, vocab).contiguous(), rows)
    freq = torch.bincount(tokens, minlength=vocab).double() / n
    probs = torch.softmax(logits[0].double() / temperature, dim=-1)
    # 5 standard deviations of a binomial frequency
    assert torch.all((freq - probs).abs() <= 5 * torch.sqrt(probs * (1 - probs) / n) + 1e-4)


@pytest.mark.parametrize(
    "params",
    [dict(top_k=3), dict(top_p=0.6), dict(min_p=0.2), dict(top_k=5, top_p=0.5, min_p=0.1)],
)
def test_filters_restrict_the_support(params):
    n = 3000
    logits = torch.tensor([[3.0, 2.5, 2.0, 1.0, 0.5, 0.0, -1.0, -2.0]])
    vocab = logits.shape[1]
    rows = [RowParams(seed=5, position=p, temperature=1.0, **params) for p in range(n)]
    tokens, _, _ = run(logits.expand(n, vocab).contiguous(), rows)
    probs = torch.softmax(logits[0].double(), dim=-1)
    allowed = torch.ones(vocab, dtype=torch.bool)
    if "top_k" in params:
        allowed[params["top_k"]:] = False  # logits are sorted descending
    if "top_p" in params:
        kept = probs * allowed
        kept = kept / kept.sum()
        before = torch.cumsum(kept, 0) - kept
        allowed &= before < params["top_p"]
    if "min_p" in params:
        allowed &= probs >= params["min_p"] * probs.max()
    seen = torch.bincount(tokens, minlength=vocab) > 0
    assert not torch.any(seen & ~allowed)
    assert torch.equal(seen, allowed)  # and every allowed token is reachable


def test_sampled_rows_are_the_gumbel_argmax_of_the_scalar_definition():
    # The reference: each token's score s - log(-log(u)) from Python floats and token_uniform,
    # s in float32 as the sampler computes it; min_p drops tokens below min_p * the max weight.
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(12, 40, generator=g) * 2
    rows = [RowParams(seed=3 + i, position=50 + i, temperature=[0.5, 1.0, 1.9][i % 3], min_p=[0.0, 0.1][i % 2])
            for i in range(12)]
    tokens, _, plan = run(logits, rows)
    for i, r in enumerate(rows):
        s = logits[i] / torch.tensor(r.temperature, dtype=torch.float32)
        s = (s - s.max()).tolist()
        key = int(plan.draw_key[i])
        scores = [x - math.log(-math.log(token_uniform(key, t))) if math.exp(x) >= r.min_p else -math.inf
                  for t, x in enumerate(s)]
        assert tokens[i] == max(range(40), key=lambda t: (scores[t], -t)), i


@pytest.mark.parametrize("vocab", [6, 1000, 1031, 2048])
def test_padding_tokens_never_change_the_token(vocab):
    # Padding tokens (-inf) score -inf, and every other token keeps its own noise.
    g = torch.Generator().manual_seed(vocab)
    logits = torch.randn(50, vocab, generator=g) * 3
    rows = [random_params(vocab + i, i, g) for i in range(50)]
    padded = torch.cat([logits, torch.full((50, 4096 - vocab), -math.inf)], dim=1)
    assert torch.equal(run(logits, rows)[0], run(padded, rows)[0])


def test_logprobs_match_log_softmax_and_top_logprobs_are_ordered():
    logits = torch.randn(8, V) * 3
    rows = [RowParams(seed=1, position=i, temperature=[0.0, 0.7][i % 2]) for i in range(8)]
    tokens, lps, plan = run(logits, rows)
    temps = torch.tensor([1.0, 0.7] * 4, dtype=torch.float64)
    ref = torch.log_softmax(logits.double() / temps[:, None], dim=-1)
    assert torch.allclose(lps.double(), ref.gather(1, tokens[:, None])[:, 0], atol=1e-5, rtol=0)
    values, ids = top_logprobs(logits, plan, 5)
    ref_values, _ = torch.topk(ref, 5, dim=-1)
    assert torch.allclose(values.double(), ref_values, atol=1e-5, rtol=0)
    assert torch.equal(token_logprobs(logits, plan, ids), values)
    assert torch.all(values[:, :-1] >= values[:, 1:])


def test_low_precision_logits_and_shape_checks():
    logits = (torch.randn(3, V) * 2).to(torch.bfloat16)
    rows = [RowParams(seed=2, position=i, temperature=0.9, top_p=0.8) for i in range(3)]
    tokens, lps, plan = run(logits, rows)
    assert tokens.dtype == torch.int64 and lps.dtype == torch.float32 and torch.isfinite(lps).all()
    with pytest.raises(ValueError):
        sample(logits[:2], plan)
    with pytest.raises(ValueError):
        plan_sampling([RowParams(seed=1, position=0, top_p=0.0)], V)
    with pytest.raises(ValueError):
        plan_sampling([RowParams(seed=1, position=0, temperature=math.nan)], V)


def test_perturbation_changes_fast_path_logits_only_when_enabled():
    logits = torch.randn(4, V)
    assert perturb_fast_path_logits(logits, 0.0) is logits
    noisy = perturb_fast_path_logits(logits, 1.0, torch.Generator().manual_seed(0))
    assert noisy.shape == logits.shape and not torch.equal(noisy, logits)
    with pytest.raises(ValueError):
        perturb_fast_path_logits(logits, -1.0)


def test_plan_carries_every_row_parameter_in_its_dtype():
    rows = [RowParams(seed=5, position=9, temperature=0.0, top_k=3),  # greedy: filters off
            RowParams(seed=6, position=10, temperature=0.7, top_k=3, min_p=0.25),
            RowParams(seed=7, position=11, temperature=1.3, top_p=0.4),
            RowParams(seed=8, position=12, temperature=0.9, top_k=V)]  # top_k >= vocab: off
    plan = plan_sampling(rows, V)
    assert plan.greedy.dtype == torch.bool and plan.greedy.tolist() == [True, False, False, False]
    assert plan.temperature.dtype == torch.float32  # rounded as float32 arithmetic would round it
    assert torch.equal(plan.temperature, torch.tensor([1.0, 0.7, 1.3, 0.9], dtype=torch.float32))
    assert plan.fields.dtype == torch.float64 and plan.fields.dim() == 1  # one copy to the device
    assert plan.min_p.dtype == torch.float32 and plan.min_p.tolist() == [0.0, 0.25, 0.0, 0.0]
    keys = plan.draw_key
    assert keys.dtype == torch.float64 and torch.equal(keys, torch.from_numpy(draw_keys([5, 6, 7, 8], [9, 10, 11, 12])))
    assert (plan.top_k_rows.tolist(), plan.top_k.tolist(), plan.max_top_k) == ([1], [3], 3)
    assert (plan.top_p_rows.tolist(), plan.top_p.tolist()) == ([2], [0.4])
    assert plan.filtered_rows.dtype == torch.int64 and plan.filtered_rows.tolist() == [1, 2]
    assert (plan.all_greedy, plan.any_min_p) == (False, True)
    again = plan_sampling(rows[1:2], V)  # a row's key is its own (seed, position) draw
    assert again.draw_key.item() == plan.draw_key[1].item()
    assert plan.batch_rows.tolist() == []
    placed = plan_sampling(rows, V, batch_rows=[3, 8, 5, 0])
    assert placed.batch_rows.dtype == torch.int64 and placed.batch_rows.tolist() == [3, 8, 5, 0]
    assert placed.top_p_rows.tolist() == [2] and placed.filtered_rows.tolist() == [1, 2]
    with pytest.raises(ValueError, match="3 batch rows for 4 rows"):
        plan_sampling(rows, V, batch_rows=[0, 1, 2])
    empty = plan_sampling([], V)
    assert empty.num_rows == 0 and empty.all_greedy and empty.temperature.numel() == 0
    assert sample(torch.zeros(0, V), empty).shape == (0,)


@pytest.mark.parametrize("with_filters", [False, True])
def test_rows_sampled_at_their_batch_rows_equal_the_gathered_rows(with_filters):
    g = torch.Generator().manual_seed(3)
    rows = [random_params(40 + i, 100 + i, g) for i in range(6)]
    if not with_filters:
        rows = [RowParams(seed=r.seed, position=r.position, temperature=r.temperature, min_p=r.min_p) for r in rows]
    batch = torch.randn(20, V, generator=g) * 3
    where = [17, 2, 9, 0, 11, 5]
    plan = plan_sampling(rows, V, batch_rows=where)
    before = batch.clone()
    assert torch.equal(sample_at_batch_rows(batch, plan), sample(batch[where], plan))
    assert torch.equal(batch, before)  # the batch's logits are read, not changed
    with pytest.raises(ValueError, match="needs a plan made with batch_rows"):
        sample_at_batch_rows(batch, plan_sampling(rows, V))


def test_staged_copies_keep_their_values_and_dtype_and_refuse_others():
    from sglang_tokenweave.determinism.pinned_staging import array_to_device

    for values in (np.array([0.5, -2.0, 1e-300]), np.array([-(1 << 63), 7, (1 << 63) - 1])):
        out = array_to_device(values, "cpu")
        assert out.dtype == torch.from_numpy(values).dtype and np.array_equal(out.numpy(), values)
    with pytest.raises(TypeError, match="float64 or int64, got int32"):
        array_to_device(np.array([1], dtype=np.int32), "cpu")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_pytorch_path_on_some_rows_gives_those_rows_tokens_of_all_rows(seed):
    """Under the Triton kernel the filtered rows take the PyTorch path by themselves: their top-k
    and top-p indices are re-based onto the rows taken, so each row keeps its filters."""
    from sglang_tokenweave.determinism.sampling import _sample_torch

    g = torch.Generator().manual_seed(seed)
    rows = [random_params(70 + i, 300 + i, g) for i in range(24)]
    logits = torch.randn(len(rows), V, generator=g) * 3
    plan = plan_sampling(rows, V)
    every = _sample_torch(logits, plan)
    assert plan.any_filtered and plan.max_top_k and plan.top_p_rows.numel()
    for taken in (plan.filtered_rows, torch.arange(len(rows)), torch.unique(torch.cat([plan.filtered_rows,
                                                                                     torch.tensor([0, 5, 23])]))):
        assert torch.equal(_sample_torch(logits, plan, taken), every[taken])
