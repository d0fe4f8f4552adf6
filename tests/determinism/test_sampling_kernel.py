"""The Triton sampling kernel against the PyTorch path, on CPU through Triton's interpreter.

Triton reads TRITON_INTERPRET when a kernel is defined, so the checks run in a child process
with it set (this file, run as a script). On GPUs: tests/gpu/test_sampler_gpu.py.
"""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from sglang_tokenweave.determinism.sampling import (RowParams, plan_sampling, sample, sample_at_batch_rows,
                                                     write_at_batch_rows)

ROWS = 24
# Above the split threshold (8192): five chunks of 2048, the last one partial.
LARGE_VOCAB = 9000


def mixed_rows(n: int) -> list[RowParams]:
    """Greedy, several temperatures, min_p; every third row with top_p and every fourth with
    top_k (those take the PyTorch path under either kernel)."""
    return [RowParams(seed=100 + i, position=7 + i, temperature=[0.0, 0.6, 1.0, 1.5][i % 4],
                      min_p=[0.0, 0.02][i % 2], top_p=[1.0, 1.0, 0.9][i % 3], top_k=[-1, -1, -1, 40][i % 4])
            for i in range(n)]


def checks() -> dict:
    """Run in the child: token ids of both kernels for each case."""
    from sglang_tokenweave.determinism.sampling_kernel import SPLIT_ABOVE, sample_unfiltered

    assert LARGE_VOCAB > SPLIT_ABOVE
    out = {}
    g = torch.Generator().manual_seed(0)
    for vocab, dtype in ((512, torch.float32), (1000, torch.bfloat16), (2065, torch.float32),
                         (LARGE_VOCAB, torch.bfloat16)):
        logits = (torch.randn(ROWS, vocab, generator=g) * 3).to(dtype)
        logits[0, 5] = logits[0, vocab - 3] = logits[0].max() + 1  # a greedy tie across kernel blocks
        plan = plan_sampling(mixed_rows(ROWS), vocab)
        batch = sample(logits, plan, kernel="triton")
        alone = [sample(logits[i : i + 1], plan_sampling(mixed_rows(ROWS)[i : i + 1], vocab), kernel="triton")
                 for i in range(ROWS)]
        unfiltered = plan_sampling([dataclasses.replace(r, top_p=1.0, top_k=-1) for r in mixed_rows(ROWS)], vocab)
        # The rows read in place from a larger batch (in another order, among other rows): the
        # unfiltered ones by the kernels, the others gathered onto the PyTorch path.
        spread = torch.randperm(ROWS + 7, generator=g)[:ROWS]
        wide = torch.randn(ROWS + 7, vocab, generator=g).to(dtype)
        wide[spread] = logits
        at_rows = plan_sampling(mixed_rows(ROWS), vocab, batch_rows=spread.tolist())
        unfiltered_at_rows = plan_sampling([dataclasses.replace(r, top_p=1.0, top_k=-1) for r in mixed_rows(ROWS)],
                                           vocab, batch_rows=spread.tolist())
        out[f"{vocab}-{dtype}"] = {"torch": sample(logits, plan).tolist(), "triton": batch.tolist(),
                                   "alone": torch.cat(alone).tolist(),
                                   "at batch rows": sample_at_batch_rows(wide, at_rows, kernel="triton").tolist(),
                                   "unfiltered at batch rows": {
                                       "one program": sample_unfiltered(wide, unfiltered_at_rows, split=False,
                                                                        at_batch_rows=True).tolist(),
                                       "split": sample_unfiltered(wide, unfiltered_at_rows, split=True,
                                                                  at_batch_rows=True).tolist()},
                                   "one program": sample_unfiltered(logits, unfiltered, split=False).tolist(),
                                   "split": sample_unfiltered(logits, unfiltered, split=True).tolist()}
    # Two equally likely tokens far apart (other blocks of the one-program kernel, other chunks of
    # the split strategy), drawn at 64 positions: the noise decides, the same way on every path.
    for vocab in (700, LARGE_VOCAB):
        logits = torch.full((64, vocab), -1e4)
        logits[:, 3] = logits[:, vocab - 50] = 0.0
        plan = plan_sampling([RowParams(seed=0, position=p) for p in range(64)], vocab)
        out[f"two tokens {vocab}"] = {"torch": sample(logits, plan).tolist(),
                                      "one program": sample_unfiltered(logits, plan, split=False).tolist(),
                                      "split": sample_unfiltered(logits, plan, split=True).tolist()}
    out["write at batch rows"] = write_checks(g)
    out["table plans"] = table_checks(g)
    return out


def table_checks(g: torch.Generator) -> dict:
    """Decode steps planned from the row table by the Triton kernel: the PyTorch path's fields,
    and the host plan's tokens written at the deterministic rows only."""
    from row_table_cases import table_step, written_ids

    out = {}
    for seed in (0, 1):
        step = table_step("cpu", seed)
        plan = step.table_plan(1000, "cpu", "triton")
        logits = torch.randn(len(step.request_rows), 1000, generator=g) * 3
        out[seed] = {"same fields": torch.equal(plan.fields, step.table_plan(1000, "cpu", "torch").fields),
                     "ids": written_ids(logits, plan, "triton", at_batch_rows=False),
                     "host plan ids": written_ids(logits, step.host_plan(1000, "cpu"), "triton", at_batch_rows=True),
                     "ours": step.ours}
    return out


def write_checks(g: torch.Generator) -> dict:
    """Sampled ids written into a batch's int32 ids at the plan's batch rows, by both kernels,
    for a handful of rows and for more than one program's worth; every other entry untouched."""
    out = {}
    for rows, batch in ((5, 9), (300, 413)):
        spread = torch.randperm(batch, generator=g)[:rows]
        values = torch.randint(0, 1 << 20, (rows,), generator=g)  # int64, as the samplers return
        plan = plan_sampling([RowParams(seed=0, position=i) for i in range(rows)], 8, batch_rows=spread.tolist())
        expected = torch.full((batch,), -7, dtype=torch.int32)
        expected[spread] = values.to(torch.int32)
        got = {}
        for kernel in ("torch", "triton"):
            target = torch.full((batch,), -7, dtype=torch.int32)
            write_at_batch_rows(target, values, plan, kernel=kernel)
            got[kernel] = target.tolist()
        out[rows] = {"expected": expected.tolist(), **got}
    return out


@pytest.fixture(scope="module")
def results():
    child = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "TRITON_INTERPRET": "1"})
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.splitlines()[-1])


CASES = ["512-torch.float32", "1000-torch.bfloat16", "2065-torch.float32", f"{LARGE_VOCAB}-torch.bfloat16"]


@pytest.mark.parametrize("case", CASES)
def test_kernel_samples_what_the_pytorch_path_samples(results, case):
    got = results[case]
    assert got["triton"] == got["torch"]
    assert got["triton"][0] == 5  # greedy tie: the lowest index, though the other max is in a later block


@pytest.mark.parametrize("case", CASES)
def test_a_row_gets_the_same_token_alone_and_in_a_batch(results, case):
    assert results[case]["alone"] == results[case]["triton"]


@pytest.mark.parametrize("case", CASES)
def test_split_and_one_program_strategies_agree(results, case):
    got = results[case]
    assert got["split"] == got["one program"]
    assert got["split"][0] == 5
    filtered = [i for i, r in enumerate(mixed_rows(ROWS)) if r.top_p < 1.0 or r.top_k > 0]
    unfiltered = [i for i in range(ROWS) if i not in filtered]
    assert [got["split"][i] for i in unfiltered] == [got["torch"][i] for i in unfiltered]


@pytest.mark.parametrize("case", CASES)
def test_rows_read_in_place_from_a_batch_get_the_tokens_of_the_gathered_rows(results, case):
    got = results[case]
    assert got["at batch rows"] == got["triton"]
    unfiltered = got["unfiltered at batch rows"]
    assert unfiltered["one program"] == unfiltered["split"] == got["one program"]


@pytest.mark.parametrize("vocab", [700, LARGE_VOCAB])
def test_two_equally_likely_tokens_far_apart_are_drawn_alike_on_every_path(results, vocab):
    got = results[f"two tokens {vocab}"]
    assert got["one program"] == got["split"] == got["torch"]
    assert set(got["torch"]) == {3, vocab - 50}
    assert 16 <= got["torch"].count(3) <= 48


def test_sampled_ids_are_written_at_their_batch_rows_and_nowhere_else(results):
    for rows, got in results["write at batch rows"].items():
        assert got["triton"] == got["torch"] == got["expected"], rows
        assert got["expected"].count(-7) == len(got["expected"]) - int(rows)  # the others untouched


def test_table_plans_from_the_kernel_match_the_pytorch_path_and_the_host_plan(results):
    for seed, got in results["table plans"].items():
        assert got["same fields"], seed
        assert got["ids"] == got["host plan ids"], seed
        assert [i for i, token in enumerate(got["ids"]) if token != -7] == got["ours"], seed


def test_writing_at_batch_rows_needs_an_indexed_plan():
    from sglang_tokenweave.determinism.sampling_kernel import write_at_batch_rows as write_kernel

    plan = plan_sampling([RowParams(seed=0, position=0)], 8)
    with pytest.raises(ValueError, match="indexed: False"):
        write_kernel(torch.zeros(4, dtype=torch.int32), torch.zeros(1, dtype=torch.int64), plan)


def test_unknown_kernel_is_refused():
    plan = plan_sampling([RowParams(seed=0, position=0)], 8)
    with pytest.raises(ValueError, match="sampling kernel must be one of"):
        sample(torch.zeros(1, 8), plan, kernel="cuda")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: row_table_cases
    print(json.dumps(checks()))
