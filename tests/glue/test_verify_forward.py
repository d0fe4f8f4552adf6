"""Which forward a verification pass takes (SGLang's prefill CUDA graph or eager), and that the
choice, made at the first pass, is kept."""

import types

import pytest

from sglang_tokenweave.glue.determinism import verify_forward


class GraphRunner:
    prefill_backend_name = "breakable"

    def __init__(self, max_tokens):
        self.max_tokens = max_tokens

    def can_run_graph(self, forward_batch):
        return len(forward_batch.input_ids) <= self.max_tokens


class ModelRunner:
    """Records, per forward, whether the prefill graph runner was visible to it."""

    def __init__(self, graph_runner):
        self.prefill_cuda_graph_runner = graph_runner
        self.saw = []

    def forward(self, forward_batch):
        self.saw.append(self.prefill_cuda_graph_runner)
        return "out"


def batch(tokens):
    return types.SimpleNamespace(input_ids=[0] * tokens)


def test_a_pass_replays_the_prefill_graph_and_keeps_that_choice(fresh_runtime):
    rt = fresh_runtime()
    graph = GraphRunner(max_tokens=256)
    runner = ModelRunner(graph)
    assert verify_forward.run_forward(runner, batch(256)) == "out"
    assert verify_forward.run_forward(runner, batch(256)) == "out"
    assert rt.verify_graph is True and runner.saw == [graph, graph]
    with pytest.raises(RuntimeError, match="refused a pass it ran before"):
        verify_forward.run_forward(runner, batch(512))  # never silently eager after graphs


@pytest.mark.parametrize("graph, config, tokens", [
    (GraphRunner(max_tokens=256), dict(verify_eager=True), 256),  # the flag
    (None, {}, 256),  # no prefill graphs captured
    (GraphRunner(max_tokens=128), {}, 256),  # the pass is larger than every captured bucket
])
def test_an_eager_pass_hides_the_prefill_graph_and_restores_it(fresh_runtime, graph, config, tokens):
    rt = fresh_runtime(**config)
    runner = ModelRunner(graph)
    verify_forward.run_forward(runner, batch(tokens))
    verify_forward.run_forward(runner, batch(tokens))
    assert rt.verify_graph is False and runner.saw == [None, None]
    assert runner.prefill_cuda_graph_runner is graph


def test_sglang_eager_runner_counts_as_no_graph(fresh_runtime):
    from sglang.srt.model_executor.runner.eager_runner import EagerRunner

    rt = fresh_runtime()
    eager = object.__new__(EagerRunner)  # only its type is looked at
    runner = ModelRunner(eager)
    verify_forward.run_forward(runner, batch(256))
    assert rt.verify_graph is False and runner.saw == [None]
