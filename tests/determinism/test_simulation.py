"""A miniature scheduler over the pure modules: many requests, n > 1, shared verification passes.

The "model" is a hash of (sampling seed, prompt, tokens so far); the verifier computes it
exactly, the fast path gets it wrong at a chosen rate. Whatever the traffic, the errors and
the order in which requests arrive, every choice must commit exactly the tokens that the model
alone produces for its own seed.
"""

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_tokenweave.determinism.groups import ReadyRequest, plan_verify_passes
from sglang_tokenweave.determinism.metrics import DeterminismMetrics
from sglang_tokenweave.determinism.seeds import choice_seed
from sglang_tokenweave.determinism.state import DeterministicRequest

VOCAB, STOP = 50, 0


def model(seed, prompt, output):
    digest = hashlib.blake2b(repr((seed, prompt, tuple(output))).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") % VOCAB


def reference(seed, prompt, max_new_tokens):
    out = []
    while not out or (len(out) < max_new_tokens and out[-1] != STOP):
        out.append(model(seed, prompt, out))
    return out


requests = st.lists(
    st.tuples(
        st.lists(st.integers(1, VOCAB - 1), min_size=1, max_size=4),  # prompt
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),  # seed
        st.integers(1, 3),  # n
        st.integers(1, 30),  # max_new_tokens
        st.integers(0, 6),  # arrival step
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=100, deadline=None)
@given(
    reqs=requests,
    window=st.integers(1, 8),
    rows=st.integers(1, 4),
    lookahead=st.integers(1, 3),
    error_rate=st.sampled_from([0.0, 0.2, 1.0]),
    data=st.data(),
)
def test_outputs_depend_on_request_alone(reqs, window, rows, lookahead, error_rate, data):
    lookahead = min(lookahead, rows)  # a replay of L blocks takes L rows of one pass
    metrics = DeterminismMetrics()
    choices = []  # (key, seed, prompt, state, arrival)
    for prompt, seed, n, max_new, arrival in reqs:
        seeds = [choice_seed(seed, i) for i in range(n)]
        assert len(set(seeds)) == n
        for s in seeds:
            state = DeterministicRequest(len(prompt), window, max_new_tokens=max_new, stop_token_ids=[STOP],
                                         lookahead_blocks=lookahead)
            choices.append((len(choices), s, tuple(prompt), state, arrival))

    for step in range(10_000):
        live = [c for c in choices if c[4] <= step and not c[3].finished]
        if not live and all(c[3].finished for c in choices):
            break
        order = data.draw(st.permutations(live), label="batch order")
        for key, seed, prompt, state, _ in order:
            if not state.out:
                metrics.on_request()
                metrics.on_commit(state.on_prefill_token(model(seed, prompt, [])))
            elif state.can_decode():
                token = model(seed, prompt, state.out)
                if data.draw(st.floats(0, 1), label="u") < error_rate:
                    token = (token + data.draw(st.integers(1, VOCAB - 1), label="wrong")) % VOCAB
                fast_finished = token == STOP or len(state.out) + 1 >= state.max_new_tokens
                state.on_fast_token(token)
                state.needs_verification(fast_finished)
        # As the glue does: a pass runs once some request cannot decode on, and then takes every
        # request with a complete block (or everything, for those that cannot decode on).
        due = {c[0]: (c, c[3].ready_tokens()) for c in live if c[3].ready_tokens()}
        if not any(c[3].needs_verification() for c, _ in due.values()):
            due = {}
        ready = [ReadyRequest(k, c[3].num_replayed + n) for k, (c, n) in due.items()]
        for verify_pass in plan_verify_passes(ready, rows, window):
            assert len(verify_pass.rows) == rows and verify_pass.num_slots == rows * window
            metrics.on_pass(verify_pass.num_real_rows)
            for key in dict.fromkeys(row.key for row in verify_pass.rows if row.key is not None):
                (_, seed, prompt, state, _), n = due[key]
                c = state.num_committed
                answer = [model(seed, prompt, state.out[: c + j]) for j in range(n)]
                answer += [-1] * window  # padding rows carry junk; it must be ignored
                metrics.on_commit(state.apply_verification(answer, num_tokens=n), tokens_verified=n)
    else:
        raise AssertionError("the scheduler never finished")

    outputs = {}
    for _, seed, prompt, state, _ in choices:
        assert state.out == reference(seed, prompt, state.max_new_tokens)
        outputs.setdefault((seed, prompt, state.max_new_tokens), state.out)
        assert outputs[(seed, prompt, state.max_new_tokens)] == state.out
    snap = metrics.snapshot()
    assert snap["tokens_committed"] == sum(len(c[3].out) for c in choices)
    assert snap["requests"] == len(choices)
    if error_rate == 0.0:
        assert snap["tokens_rolled_back"] == 0
    if error_rate == 1.0 and snap["tokens_verified"]:
        assert snap["rollback_events"] > 0
