"""Batch invariance of the seeded sampler and log-probabilities on a CUDA device."""

import dataclasses

import pytest
import torch

from sglang_tokenweave.determinism.logprobs import token_logprobs, top_logprobs
from sglang_tokenweave.determinism.sampling import RowParams, plan_sampling, sample

pytestmark = pytest.mark.gpu

VOCAB = 151936  # a large real vocabulary: the kernels' reduction strategies depend on size
ROWS = 256


def mixed_params(i: int) -> RowParams:
    return RowParams(
        seed=1000 + i,
        position=17 + i,
        temperature=[0.0, 0.6, 1.0, 1.5][i % 4],
        top_p=[1.0, 0.9, 0.5][i % 3],
        top_k=[-1, 50, 1 << 30, 1000, 1][i % 5],
        min_p=[0.0, 0.02][i % 2],
    )


def evaluate(logits, rows):
    plan = plan_sampling(rows, VOCAB, "cuda")
    tokens = sample(logits, plan, kernel="torch")
    top_values, top_ids = top_logprobs(logits, plan, 8)
    return tokens.cpu(), token_logprobs(logits, plan, tokens).cpu(), top_values.cpu(), top_ids.cpu()


@pytest.fixture(scope="module")
def pool():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    g = torch.Generator().manual_seed(0)
    yield (torch.randn(ROWS, VOCAB, generator=g) * 5).to(torch.bfloat16).cuda()
    # Give the memory back: a server that a later test starts in the same pytest run checks that
    # every GPU has the same free memory.
    torch.cuda.empty_cache()


def test_each_row_matches_its_result_alone_in_any_batch(pool):
    g = torch.Generator().manual_seed(1)
    rows = [mixed_params(i) for i in range(ROWS)]
    targets = list(range(0, ROWS, 9))
    alone = {i: evaluate(pool[i : i + 1], [rows[i]]) for i in targets}
    for batch in (2, 7, 64, ROWS):
        index = torch.randperm(ROWS, generator=g)[:batch]
        got = evaluate(pool[index.cuda()], [rows[i] for i in index.tolist()])
        for position, row in enumerate(index.tolist()):
            if row in alone:
                for batched, single in zip(got, alone[row]):
                    assert torch.equal(batched[position], single[0]), (batch, row)


def test_sampled_frequencies_on_device_match_the_distribution(pool):
    n = 4000
    logits = pool[:1].float().expand(n, VOCAB).contiguous()
    rows = [RowParams(seed=3, position=p, temperature=1.0, top_k=4) for p in range(n)]
    tokens = sample(logits, plan_sampling(rows, VOCAB, "cuda"), kernel="torch").cpu()
    top = torch.topk(pool[0].float(), 4)
    probs = torch.softmax(top.values.double(), dim=-1).cpu()
    freq = torch.stack([(tokens == t).double().mean() for t in top.indices.cpu()])
    assert torch.all((freq - probs).abs() <= 5 * torch.sqrt(probs * (1 - probs) / n) + 1e-4)


@pytest.mark.parametrize("split", [False, True])
def test_triton_kernel_frequencies_match_the_distribution(split):
    # Six likely tokens far apart (other chunks of the split strategy) among 151,936 others; one
    # row per position, so every draw has its own noise.
    from sglang_tokenweave.determinism.sampling_kernel import sample_unfiltered

    n, temperature = 20000, 0.8
    row = torch.full((VOCAB,), -30.0)
    likely = torch.tensor([7, 4000, 50000, 90001, 120000, VOCAB - 1])
    row[likely] = torch.tensor([1.0, 0.5, -0.2, 2.0, 0.0, -3.0])
    rows = [RowParams(seed=21, position=p, temperature=temperature) for p in range(n)]
    tokens = sample_unfiltered(row.cuda().expand(n, VOCAB), plan_sampling(rows, VOCAB, "cuda"), split=split).cpu()
    probs = torch.softmax(row.double() / temperature, dim=-1)
    freq = torch.stack([(tokens == t).double().mean() for t in likely.tolist()])
    expected = probs[likely]
    assert torch.all((freq - expected).abs() <= 5 * torch.sqrt(expected * (1 - expected) / n) + 1e-4)
    assert (tokens[:, None] == likely).any(dim=1).all()  # every other token: probability below 1e-17


def test_triton_kernel_samples_what_the_pytorch_path_samples(pool):
    # Rows without top-k / top-p take the kernel; its exp and log may differ from PyTorch's in
    # the last bit, which changes a token only where two scores tie to that bit.
    rows = [dataclasses.replace(mixed_params(i), top_p=1.0, top_k=-1) for i in range(ROWS)]
    plan = plan_sampling(rows, VOCAB, "cuda")
    assert torch.equal(sample(pool, plan, kernel="triton"), sample(pool, plan, kernel="torch"))
    mixed = plan_sampling([mixed_params(i) for i in range(ROWS)], VOCAB, "cuda")
    assert torch.equal(sample(pool, mixed, kernel="triton"), sample(pool, mixed, kernel="torch"))


def test_triton_kernel_gives_a_row_the_same_token_in_any_batch(pool):
    g = torch.Generator().manual_seed(2)
    rows = [mixed_params(i) for i in range(ROWS)]

    def triton_tokens(logits, batch_rows):
        return sample(logits, plan_sampling(batch_rows, VOCAB, "cuda"), kernel="triton")

    alone = {i: triton_tokens(pool[i : i + 1], [rows[i]]) for i in range(0, ROWS, 7)}
    for batch in (3, 64, ROWS):
        index = torch.randperm(ROWS, generator=g)[:batch]
        got = triton_tokens(pool[index.cuda()], [rows[i] for i in index.tolist()])
        for position, row in enumerate(index.tolist()):
            if row in alone:
                assert torch.equal(got[position], alone[row][0]), (batch, row)


def test_triton_strategies_agree_on_a_large_vocabulary(pool):
    from sglang_tokenweave.determinism.sampling_kernel import SPLIT_ABOVE, sample_unfiltered

    assert VOCAB > SPLIT_ABOVE  # sample(kernel="triton") takes the split strategy here
    rows = [dataclasses.replace(mixed_params(i), top_p=1.0, top_k=-1) for i in range(ROWS)]
    plan = plan_sampling(rows, VOCAB, "cuda")
    assert torch.equal(sample_unfiltered(pool, plan, split=True), sample_unfiltered(pool, plan, split=False))


@pytest.mark.parametrize("vocab", [512, VOCAB])
def test_triton_kernels_read_rows_in_place_as_if_gathered(pool, vocab):
    from sglang_tokenweave.determinism.sampling import sample_at_batch_rows

    logits = pool[:, :vocab].contiguous()
    where = torch.randperm(ROWS, generator=torch.Generator().manual_seed(1))[:40].tolist()
    rows = [dataclasses.replace(mixed_params(i), top_p=1.0, top_k=-1) for i in range(40)]
    plan = plan_sampling(rows, vocab, "cuda", batch_rows=where)
    gathered = sample(logits[where], plan_sampling(rows, vocab, "cuda"), kernel="triton")
    assert torch.equal(sample_at_batch_rows(logits, plan, kernel="triton"), gathered)


@pytest.mark.parametrize("rows,batch", [(3, 64), (200, 256)])
def test_sampled_ids_are_written_at_their_batch_rows_only(rows, batch):
    from sglang_tokenweave.determinism.sampling import write_at_batch_rows

    g = torch.Generator().manual_seed(rows)
    where = torch.randperm(batch, generator=g)[:rows]
    values = torch.randint(0, 1 << 20, (rows,), generator=g).cuda()  # int64, as the samplers return
    plan = plan_sampling([RowParams(seed=0, position=i) for i in range(rows)], 8, "cuda", batch_rows=where.tolist())
    target = torch.full((batch,), -7, dtype=torch.int32, device="cuda")  # SGLang's ids: int32
    write_at_batch_rows(target, values, plan, kernel="triton")
    expected = torch.full((batch,), -7, dtype=torch.int32)
    expected[where] = values.cpu().to(torch.int32)
    assert torch.equal(target.cpu(), expected)


@pytest.mark.parametrize("vocab", [512, VOCAB])
def test_table_plans_give_the_host_plans_tokens_at_our_rows_only(pool, vocab):
    from row_table_cases import POISON, table_step, written_ids

    step = table_step("cuda", seed=vocab, deterministic=40, batch=63)
    plan = step.table_plan(vocab, "cuda", "triton")
    assert torch.equal(plan.fields, step.table_plan(vocab, "cuda", "torch").fields)
    logits = pool[: len(step.request_rows), :vocab].contiguous()
    got = written_ids(logits, plan, "triton", at_batch_rows=False)
    assert got == written_ids(logits, step.host_plan(vocab, "cuda"), "triton", at_batch_rows=True)
    assert [i for i, token in enumerate(got) if token != POISON] == step.ours
