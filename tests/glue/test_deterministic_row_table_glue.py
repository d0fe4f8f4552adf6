"""The sampler hooks' and the verifier's choice between the row table and host plans, on
stand-ins for SGLang's scheduler, batches and requests (no server): the same tokens either way,
the table's rows written at prefills and cleared when the pool gives a row to another request."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from sglang_tokenweave.determinism.config import DeterminismConfig
from sglang_tokenweave.determinism.groups import VerifyPass, VerifyRow
from sglang_tokenweave.determinism.sampling import RowParams
from sglang_tokenweave.glue.determinism import runtime as runtime_module
from sglang_tokenweave.glue.determinism import sampling_hooks, verifier
from sglang_tokenweave.glue.determinism.markers import DETERMINISTIC_KEY
from sglang_tokenweave.glue.determinism.scheduling import track_deterministic_req

VOCAB = 64
POISON = -7


class Req:
    """A stand-in for SGLang's ``Req`` (it takes weak references) at a request row."""

    def __init__(self, pool_row, seed=None, **params):
        custom = {DETERMINISTIC_KEY: True} if seed is not None else None
        self.sampling_params = SimpleNamespace(custom_params=custom)
        self.req_pool_idx, self.output_ids = pool_row, []
        self.row = RowParams(seed=seed or 0, position=0, **params)
        track_deterministic_req(None, self)


def batch_of(reqs, decode, positions=None):
    positions = positions if positions is not None else [10 + 3 * i for i in range(len(reqs))]
    return SimpleNamespace(reqs=reqs, forward_mode=SimpleNamespace(is_decode=lambda: decode),
                           req_pool_indices=torch.tensor([r.req_pool_idx for r in reqs]),
                           seq_lens_cpu=torch.tensor(positions) + 1, positions=torch.tensor(positions))


@pytest.fixture(autouse=True)
def stand_ins(monkeypatch):
    monkeypatch.setattr(runtime_module, "_runtime", runtime_module.Runtime(DeterminismConfig().for_device("cpu")))
    det = SimpleNamespace(state=SimpleNamespace(sample_position=lambda output_index: 5 + output_index))
    monkeypatch.setattr(sampling_hooks, "det_for", lambda req: det)
    monkeypatch.setattr(sampling_hooks, "row_params",
                        lambda req, det, position: dataclasses.replace(req.row, position=position))
    return SimpleNamespace(req_to_token_pool=SimpleNamespace(req_to_token=torch.zeros(16, 4), device="cpu"))


def step(scheduler, batch, logits):
    """Run a batch through both hooks; SGLang's own sampler leaves POISON everywhere."""
    sampling_hooks.note_batch_rows(scheduler, batch)
    planned = type(sampling_hooks._pending).__name__
    sglang_sampler = lambda *args, **kwargs: torch.full((len(batch.reqs),), POISON, dtype=torch.int32)
    ids = sampling_hooks.sample_deterministic_rows(
        sglang_sampler, None, SimpleNamespace(next_token_logits=logits),
        SimpleNamespace(temperatures=torch.ones(len(batch.reqs), 1)), False, None, None, batch.positions)
    return planned, ids.tolist()


def test_decode_steps_plan_from_the_table_and_sample_what_host_plans_sample(stand_ins):
    ours = [Req(3, seed=11, temperature=0.8), Req(9, seed=12, temperature=0.0), Req(4, seed=13, min_p=0.1)]
    others = [Req(2), Req(7)]
    for req in ours:
        assert step(stand_ins, batch_of([req], decode=False), torch.randn(1, VOCAB))[0] == "_HostRows"
    assert runtime_module.runtime().row_table.marked == {3, 9, 4}

    batch = batch_of([others[0], ours[0], ours[1], others[1], ours[2]], decode=True)
    logits = torch.randn(5, VOCAB, generator=torch.Generator().manual_seed(0)) * 2
    planned, from_table = step(stand_ins, batch, logits)
    assert planned == "_TableRows"
    assert [i for i, token in enumerate(from_table) if token != POISON] == [1, 2, 4]

    filtered = Req(5, seed=14, top_p=0.9)  # its top-p needs the host's row lists
    step(stand_ins, batch_of([filtered], decode=False), torch.randn(1, VOCAB))
    planned, from_host = step(stand_ins, batch, logits)
    assert (planned, from_host) == ("_HostRows", from_table)


def test_a_row_given_to_another_request_leaves_the_table(stand_ins):
    first = Req(3, seed=11)
    step(stand_ins, batch_of([first], decode=False), torch.randn(1, VOCAB))
    table = runtime_module.runtime().row_table
    sampling_hooks.leave_row_table([3], None, [Req(3, seed=12)])  # deterministic: rewritten at its prefill
    assert table.marked == {3}
    sampling_hooks.leave_row_table([3], None, [Req(3)])
    assert table.marked == set() and not table.values[3].any()
    # With nothing marked, decode steps are planned on the host again.
    assert step(stand_ins, batch_of([first, Req(6)], decode=True), torch.randn(2, VOCAB))[0] == "_HostRows"


def test_a_verification_pass_is_planned_from_the_table_only_when_it_holds_every_request(stand_ins):
    tabled, filtered = Req(3, seed=11, temperature=0.8), Req(5, seed=14, top_p=0.9)
    for req in (tabled, filtered):
        step(stand_ins, batch_of([req], decode=False), torch.randn(1, VOCAB))
    by_key = {1: (0, tabled, None, 4), 2: (1, filtered, None, 4)}
    dummy = VerifyRow(key=None, num_tokens=0, window=4)

    def pass_of(*keys):
        return VerifyPass(rows=tuple(VerifyRow(key=k, num_tokens=4, window=4) for k in keys) + (dummy,), window=4)

    table = runtime_module.runtime().row_table
    assert verifier._table_of_pass(pass_of(1), by_key) is table
    assert verifier._table_of_pass(pass_of(1, 2), by_key) is None  # top-p: the host plan
    table.mark([verifier.PAD_REQ_ROW], [RowParams(seed=1, position=0)])  # dummy rows would sample it
    assert verifier._table_of_pass(pass_of(1), by_key) is None
