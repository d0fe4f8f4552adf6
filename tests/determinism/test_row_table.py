"""The row table's decode-step and verification-pass plans against host plans of the same rows (PyTorch path, CPU).
The Triton path: tests/determinism/test_sampling_kernel.py (interpreter) and the GPU tests."""

import dataclasses

import pytest
import torch

from row_table_cases import POISON, table_step, written_ids
from sglang_tokenweave.determinism.row_table import TOP_K_ALL, RowTable, supports
from sglang_tokenweave.determinism.sampling import RowParams, plan_sampling
from sglang_tokenweave.determinism.sampling_plan import BATCH_ROWS, DRAW_KEY, GREEDY, MIN_P, TEMPERATURE

VOCAB = 300


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_table_plan_holds_what_the_host_plan_holds_for_our_rows(seed):
    step = table_step("cpu", seed)
    fields = step.table_plan(VOCAB, "cpu", "torch").fields.view(BATCH_ROWS + 1, -1)
    host = step.host_plan(VOCAB, "cpu").fields
    n = len(step.ours)
    for field in (DRAW_KEY, TEMPERATURE, MIN_P, GREEDY):
        assert torch.equal(fields[field, step.ours], host[field * n : (field + 1) * n]), field
    assert fields[BATCH_ROWS].tolist() == [i if i in step.ours else -1 for i in range(len(step.request_rows))]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_table_plan_writes_the_host_plans_tokens_at_our_rows_only(seed):
    step = table_step("cpu", seed)
    logits = torch.randn(len(step.request_rows), VOCAB, generator=torch.Generator().manual_seed(seed)) * 3
    got = written_ids(logits, step.table_plan(VOCAB, "cpu", "torch"), "torch", at_batch_rows=False)
    assert got == written_ids(logits, step.host_plan(VOCAB, "cpu"), "torch", at_batch_rows=True)
    assert [i for i, token in enumerate(got) if token != POISON] == step.ours


def test_unmarked_rows_are_other_requests_rows():
    step = table_step("cpu")
    gone = step.ours[:5]
    step.table.unmark([step.request_rows[i] for i in gone])
    plan = step.table_plan(VOCAB, "cpu", "torch")
    assert [i for i, r in enumerate(plan.batch_rows.tolist()) if r >= 0] == [i for i in step.ours if i not in gone]
    assert step.table.marked == {step.request_rows[i] for i in step.ours if i not in gone}


def test_rows_with_top_k_or_top_p_stay_on_the_host_plan():
    assert supports(RowParams(seed=0, position=0, top_k=TOP_K_ALL))
    assert supports(RowParams(seed=0, position=0, temperature=0.0, top_k=40, top_p=0.5))  # greedy: no filter
    for row in (RowParams(seed=0, position=0, top_k=40), RowParams(seed=0, position=0, top_p=0.9)):
        assert not supports(row)
        with pytest.raises(ValueError, match="host plan"):
            RowTable(4, "cpu").mark([1], [row])


def test_invalid_parameters_and_mismatched_inputs_are_refused():
    table = RowTable(4, "cpu")
    with pytest.raises(ValueError, match="invalid sampling parameters"):
        table.mark([1], [RowParams(seed=0, position=0, temperature=-1.0)])
    with pytest.raises(ValueError, match="2 request rows for 1"):
        table.mark([1, 2], [RowParams(seed=0, position=0)])
    with pytest.raises(ValueError, match=r"\(3,\) positions for 2 request rows"):
        table.plan(torch.tensor([1, 2]), torch.tensor([5, 6, 7]), VOCAB)
    with pytest.raises(ValueError, match="sampling kernel must be one of"):
        table.plan(torch.tensor([1, 2]), torch.tensor([5, 6]), VOCAB, kernel="cuda")


@pytest.mark.parametrize("seed", [0, 1])
def test_a_pass_plan_from_the_table_holds_the_host_plan_of_its_windows(seed):
    """Row r of a pass replays request row rows[r] from starts[r]: input j samples position
    starts[r] + j + 1. A dummy row (the padding row 0, never marked) is inactive."""
    step, window = table_step("cpu", seed), 5
    rows = [step.request_rows[i] for i in step.ours[:3]] + [0]
    starts = [7, 40, (1 << 40) + 3, 0]
    plan = step.table.plan_windows(torch.tensor(rows), torch.tensor(starts), window, VOCAB, kernel="torch")
    fields = plan.fields.view(BATCH_ROWS + 1, -1)
    real = [dataclasses.replace(step.params[r], position=s + j + 1) for r, s in zip(rows[:3], starts) for j in range(window)]
    host = plan_sampling(real, VOCAB, "cpu").fields
    n = len(real)
    for field in (DRAW_KEY, TEMPERATURE, MIN_P, GREEDY):
        assert torch.equal(fields[field, :n], host[field * n : (field + 1) * n]), field
    assert fields[BATCH_ROWS].tolist() == [float(i) for i in range(n)] + [-1.0] * window
    assert fields[GREEDY, n:].tolist() == [1.0] * window
    with pytest.raises(ValueError, match=r"\(3,\) row starts for 4 request rows"):
        step.table.plan_windows(torch.tensor(rows), torch.tensor(starts[:3]), window, VOCAB)
