"""The overlap loop's bookkeeping while deterministic requests are in flight, on a stand-in
scheduler that replays SGLang's ``event_loop_overlap`` order of calls (no server needed)."""

from collections import deque
from types import SimpleNamespace

from sglang_tokenweave.determinism_glue import scheduling
from sglang_tokenweave.determinism_glue.markers import DETERMINISTIC_KEY


def _req(deterministic):
    custom = {DETERMINISTIC_KEY: True} if deterministic else None
    return SimpleNamespace(sampling_params=SimpleNamespace(custom_params=custom))


class LoopStandIn:
    """Calls the hooks in the order of SGLang 0.5.17's overlap loop; records what ran when."""

    def __init__(self, monkeypatch):
        self.result_queue = deque()
        self.last_batch = None
        self.running_batch = None
        self.events = []
        monkeypatch.setattr(scheduling, "verify_due", lambda s, rb: self.events.append("verify"))

    def process_batch_result(self, batch, result):
        self.events.append(f"process {batch.name}")

    def step(self, batch):
        def choose(scheduler, running_batch, last_batch):
            return batch

        batch = scheduling.verify_before_scheduling(choose, self, self.running_batch, self.last_batch)
        if batch is not None:
            self.running_batch = batch
            self.events.append(f"run {batch.name}")
            self.result_queue.append((batch, None))
        if self.last_batch:  # the loop's "process the last batch" (overlap on for this batch)
            self.process_batch_result(*self.result_queue.popleft())
        scheduling.drain_results(None, self, None, batch)
        self.last_batch = batch


def _batch(name, *deterministic):
    return SimpleNamespace(name=name, reqs=[_req(d) for d in deterministic])


def test_steps_are_synchronous_only_while_a_deterministic_request_runs(monkeypatch):
    loop = LoopStandIn(monkeypatch)
    loop.step(_batch("a", False))
    loop.step(_batch("b", False))
    assert loop.events == ["verify", "run a", "run b", "process a"]  # overlapped: b runs before a is processed
    loop.events.clear()
    loop.step(_batch("c", False, True))  # a deterministic request joins
    loop.step(_batch("d", False, True))
    # c's own result is processed in its step; each later step starts with nothing pending, so
    # verification runs and sees every token
    assert loop.events == ["run c", "process b", "process c", "verify", "run d", "process d"]
    loop.events.clear()
    loop.step(_batch("e", False))  # the deterministic request left: overlap resumes
    loop.step(_batch("f", False))
    assert loop.events == ["verify", "run e", "run f", "process e"]


def test_an_idle_step_after_synchronous_ones_pops_nothing(monkeypatch):
    loop = LoopStandIn(monkeypatch)
    loop.step(_batch("a", True))
    loop.running_batch = None  # it finished
    loop.step(None)
    assert loop.events == ["verify", "run a", "process a", "verify"]
    assert not loop.result_queue
