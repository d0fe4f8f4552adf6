"""The overlap loop's bookkeeping around verification passes, on a stand-in scheduler that
replays SGLang's ``event_loop_overlap`` order of calls (no server needed)."""

import gc
from collections import deque
from types import SimpleNamespace

import pytest

from sglang_tokenweave.determinism.config import DeterminismConfig
from sglang_tokenweave.determinism.state import DeterministicRequest
from sglang_tokenweave.glue.determinism import runtime as runtime_module
from sglang_tokenweave.glue.determinism import scheduling
from sglang_tokenweave.glue.determinism.markers import DETERMINISTIC_KEY

WINDOW = 3


class Req:
    """A stand-in for SGLang's ``Req`` (which, unlike SimpleNamespace, takes weak references)."""

    def __init__(self, name, deterministic):
        custom = {DETERMINISTIC_KEY: True} if deterministic else None
        self.name, self.sampling_params = name, SimpleNamespace(custom_params=custom)
        scheduling.track_deterministic_req(None, self)  # as the hook after Req.__init__ does
        if deterministic:
            self.state = DeterministicRequest(4, WINDOW)
            self.state.on_prefill_token(1)

    def finished(self):
        return False


@pytest.fixture(autouse=True)
def fresh_runtime(monkeypatch):
    monkeypatch.setattr(runtime_module, "_runtime", runtime_module.Runtime(DeterminismConfig()))


class LoopStandIn:
    """Calls the hooks in the order of SGLang 0.5.17's overlap loop; records what ran when.
    A processed decode step gives each deterministic request one proposal; a pass commits all."""

    def __init__(self, monkeypatch):
        self.result_queue = deque()
        self.last_batch = None
        self.events = []
        monkeypatch.setattr(scheduling, "det_of", lambda req: req)
        monkeypatch.setattr(scheduling, "verify_due", self.verify)

    def verify(self, scheduler, running_batch):
        for req in running_batch.reqs if running_batch else ():
            state = getattr(req, "state", None)
            if state is not None and state.needs_verification():
                self.events.append(f"verify {req.name}")
                window = state.verify_window()
                state.apply_verification(window.proposed_ids)

    def process_batch_result(self, batch, result):
        self.events.append(f"process {batch.name}")
        for req in batch.reqs:
            if hasattr(req, "state"):
                if req.state.can_decode():
                    req.state.on_fast_token(7)
                else:  # launched past a fast-path finish: dropped, as finish_on_committed does
                    self.events.append(f"drop {req.name}")

    def step(self, batch):
        def choose(scheduler, running_batch, last_batch):
            return batch

        batch = scheduling.verify_before_scheduling(choose, self, batch, self.last_batch)
        disable_overlap = False  # what is_disable_overlap_for_batch says for decode batches
        if batch is not None:
            self.events.append(f"run {batch.name}")
            self.result_queue.append((batch, None))
        if self.last_batch and not disable_overlap:  # the loop's "process the last batch"
            self.process_batch_result(*self.result_queue.popleft())
        self.last_batch = batch


def _decode(name, *reqs):
    return SimpleNamespace(name=name, reqs=list(reqs), forward_mode=SimpleNamespace(is_decode=lambda: True))


def test_steps_overlap_and_synchronize_only_before_a_pass(monkeypatch):
    loop = LoopStandIn(monkeypatch)
    det, other = Req("det", True), Req("other", False)
    for name in "abcdefg":
        loop.step(_decode(name, other, det))
    # det proposes one token per processed step; its block of 3 is full once c's token arrives,
    # which is known while c is in flight: d waits for c, the pass runs, then d is launched.
    assert loop.events == [
        "run a",
        "run b", "process a",
        "run c", "process b",
        "process c", "verify det", "run d",  # synchronized: c processed before d is chosen
        "run e",  # d's step was launched after the pass, and is processed after e's launch
        "process d",
        "run f", "process e",
        "process f", "verify det", "run g",
    ]
    assert det.state.num_committed == 7 and not det.state.needs_verification()
    metrics = runtime_module.runtime().metrics  # the two early processings, counted and timed
    assert metrics.verification_drains == 2 and metrics.verification_drain_seconds > 0


def test_without_deterministic_requests_nothing_waits(monkeypatch):
    loop = LoopStandIn(monkeypatch)
    other = Req("other", False)
    for name in "abc":
        loop.step(_decode(name, other))
    loop.step(None)
    assert loop.events == ["run a", "run b", "process a", "run c", "process b", "process c"]
    assert not loop.result_queue and runtime_module.runtime().metrics.verification_drains == 0


def test_a_fast_path_finish_found_late_synchronizes_at_the_next_step(monkeypatch):
    loop = LoopStandIn(monkeypatch)
    det = Req("det", True)
    loop.step(_decode("a", det))
    loop.step(_decode("b", det))  # a is processed after b is launched
    det.state.needs_verification(finished_by_fast_path=True)  # a's token was, say, an EOS
    loop.events.clear()
    loop.step(_decode("c", det))
    # b was launched before a's finish was known: its token is dropped, then the pass runs
    assert loop.events == ["process b", "drop det", "verify det", "run c"]


def test_only_deterministic_requests_are_alive_and_only_while_referenced():
    live = runtime_module.runtime().live
    det, other = Req("det", True), Req("other", False)
    assert set(live) == {det}
    del det
    gc.collect()
    assert not live and other.name == "other"


def test_hooks_leave_the_loop_to_sglang_while_no_deterministic_request_is_alive(monkeypatch):
    checks = []
    monkeypatch.setattr(scheduling, "verify_due", lambda scheduler, batch: checks.append(batch))
    loop = SimpleNamespace(result_queue=deque(), last_batch="last")
    batch = _decode("a", Req("other", False))
    assert scheduling.verify_before_scheduling(lambda *args: "next", loop, batch, "last") == "next"
    assert (checks, loop.last_batch) == ([], "last")  # no check for due passes, the loop untouched
    det = Req("det", True)
    batch.reqs.append(det)
    assert scheduling.verify_before_scheduling(lambda *args: "next", loop, batch, "last") == "next"
    assert checks == [batch] and loop.last_batch is None  # processed here: the loop must not pop
