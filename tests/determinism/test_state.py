"""The per-request verify/commit/rollback state machine, by example and by simulation."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_tokenweave.determinism.state import (
    DeterminismViolation,
    DeterministicRequest,
    FinishReason,
    InvalidTransition,
    Phase,
)

P = 5  # prompt length used by the examples


def started(window=4, first=100, **kwargs):
    state = DeterministicRequest(P, window, **kwargs)
    state.on_prefill_token(first)
    return state


def propose(state, tokens):
    for t in tokens:
        state.on_fast_token(t)


# ---- examples -----------------------------------------------------------------------------------


def test_prefill_commits_first_token():
    state = DeterministicRequest(P, 4)
    result = state.on_prefill_token(7, logprob=-0.5)
    assert state.phase is Phase.DECODING
    assert result.committed_ids == (7,) and result.stream == range(0, 1)
    assert result.kv_len == P and len(result.free_kv_positions) == 0
    assert state.committed_logprobs == [-0.5]


def test_window_fills_then_verification_is_required():
    state = started(window=3)
    propose(state, [1, 2])
    assert not state.needs_verification() and state.can_decode()
    state.on_fast_token(3)
    assert state.needs_verification() and not state.can_decode()
    with pytest.raises(InvalidTransition):
        state.on_fast_token(4)


def test_blocked_after_counts_the_proposals_in_flight():
    # The overlap scheduler launches a step before the previous one is processed: whether the
    # request may go into the next step depends on the proposals still in flight.
    state = started(window=3)
    state.on_fast_token(1)
    assert state.can_decode(1) and not state.blocked_after(1)  # 2 of 3 once it arrives
    state.on_fast_token(2)
    assert state.can_decode() and not state.blocked_after(0)
    assert not state.can_decode(1) and state.blocked_after(1)  # the block is full once it arrives
    limited = started(window=8, max_new_tokens=3)  # out = [100]
    assert not limited.blocked_after(1) and limited.blocked_after(2)  # length 3 reached
    fresh = DeterministicRequest(P, 4)
    assert not fresh.blocked_after(1)  # the isolated prefill's token is committed, not verified
    fresh.on_prefill_token(7)
    assert not fresh.blocked_after(0)  # nothing unverified, room to decode


def test_a_fast_path_finish_blocks_the_request_whatever_is_in_flight():
    state = started(window=8)
    state.on_fast_token(1)
    state.needs_verification(finished_by_fast_path=True)
    assert not state.can_decode() and state.blocked_after(0) and state.blocked_after(1)


def test_lookahead_decodes_past_a_complete_block_and_verifies_complete_blocks_first():
    state = started(window=4, lookahead_blocks=2)  # C = 1: inputs out[0..] from position P
    propose(state, [1, 2, 3])
    assert state.ready_tokens() == 0 and state.can_decode()
    state.on_fast_token(4)  # inputs out[0:4]: block 0 complete
    assert state.ready_tokens() == 4 and state.can_decode() and not state.needs_verification()
    propose(state, [5, 6])
    assert state.ready_tokens() == 4  # block 1 is not complete
    w = state.verify_window(state.ready_tokens())
    assert w.proposed_ids == (1, 2, 3, 4) and w.block_rows(4) == (range(0, 4),)
    r = state.apply_verification([1, 2, 3, 4], num_tokens=4)
    assert r.committed_ids == (1, 2, 3, 4) and r.num_dropped == 0 and len(r.free_kv_positions) == 0
    assert state.out == [100, 1, 2, 3, 4, 5, 6] and state.num_unverified == 2  # the tail is kept
    assert r.output_len == 7 and r.kv_len == P + 6 and r.stream == range(1, 5)
    assert state.num_replayed == 0 and state.ready_tokens() == 0  # block 1: inputs out[4:6]


def test_lookahead_cannot_pass_its_last_block_and_a_mismatch_drops_later_blocks():
    state = started(window=4, lookahead_blocks=2)
    propose(state, [1, 2, 3, 4, 5, 6, 7, 8])
    assert not state.can_decode() and state.needs_verification() and state.ready_tokens() == 8
    w = state.verify_window()
    assert w.block_rows(4) == (range(0, 4), range(4, 8))  # two rows, one per block
    r = state.apply_verification([1, 9, 0, 0, 0, 0, 0, 0])  # row 0 disagrees at its second token
    assert r.committed_ids == (1, 9) and r.num_dropped == 7 and r.num_accepted == 1
    assert state.out == [100, 1, 9] and r.free_kv_positions == range(P + 2, P + 8)
    assert state.num_replayed == 2 and state.ready_tokens() == 0


def test_verify_window_checks_its_token_count():
    state = started(window=4, lookahead_blocks=2)
    propose(state, [1, 2])
    with pytest.raises(ValueError):
        state.verify_window(3)
    with pytest.raises(ValueError):
        DeterministicRequest(P, 4, lookahead_blocks=0)


def test_window_replays_last_committed_and_unverified_tokens():
    state = started(window=3, first=100)
    propose(state, [1, 2, 3])
    w = state.verify_window()
    assert w.input_ids == (100, 1, 2)
    assert w.input_positions == (P, P + 1, P + 2)
    assert w.sample_positions == (P + 1, P + 2, P + 3)
    assert w.proposed_ids == (1, 2, 3)
    assert state.kv_len == P + 3  # the newest proposal has no KV yet


def test_no_mismatch_commits_whole_window():
    state = started(window=3)
    propose(state, [1, 2, 3])
    r = state.apply_verification([1, 2, 3], [-1.0, -2.0, -3.0])
    assert r.num_accepted == 3 and r.committed_ids == (1, 2, 3) and r.num_dropped == 0
    assert not r.rolled_back and len(r.free_kv_positions) == 0
    assert state.committed_ids == [100, 1, 2, 3] and r.stream == range(1, 4)
    assert state.committed_logprobs == [None, -1.0, -2.0, -3.0]
    assert r.kv_len == P + 3


def test_mismatch_at_first_row_commits_only_verifier_token():
    state = started(window=4)
    propose(state, [1, 2, 3, 4])
    r = state.apply_verification([9, 8, 7, 6])
    assert r.num_accepted == 0 and r.committed_ids == (9,) and r.num_dropped == 4
    # KV of inputs 1, 2, 3 (positions P+1..P+3) came from dropped tokens.
    assert r.free_kv_positions == range(P + 1, P + 4)
    assert state.out == [100, 9] and state.can_decode() and r.kv_len == P + 1


def test_mismatch_at_last_row_commits_window_with_correction():
    state = started(window=4)
    propose(state, [1, 2, 3, 4])
    r = state.apply_verification([1, 2, 3, 5])
    assert r.num_accepted == 3 and r.committed_ids == (1, 2, 3, 5) and r.num_dropped == 1
    assert len(r.free_kv_positions) == 0 and state.out == [100, 1, 2, 3, 5]


def test_extra_verifier_rows_are_ignored_and_short_answers_rejected():
    state = started(window=4)
    propose(state, [1, 2])
    state.needs_verification(finished_by_fast_path=True)
    with pytest.raises(ValueError):
        state.apply_verification([1])
    r = state.apply_verification([1, 2, 77, 77])
    assert r.committed_ids == (1, 2)


def test_fast_path_finish_triggers_partial_window_and_is_undone_on_mismatch():
    state = started(window=8, stop_token_ids=[0])
    propose(state, [1, 0])  # the fast path proposed the stop token
    assert state.needs_verification(finished_by_fast_path=True)
    assert not state.can_decode()
    r = state.apply_verification([1, 4])  # the verifier disagrees: no stop
    assert r.finish is None and not state.finished and state.can_decode()


def test_finish_inside_window_truncates_after_stop_token():
    state = started(window=4, stop_token_ids=[0])
    propose(state, [1, 2, 3, 4])
    r = state.apply_verification([1, 0, 3, 4])  # the verifier's token is a stop token
    assert r.finish == FinishReason("stop_token", 0) and state.finished
    assert r.committed_ids == (1, 0) and state.out == [100, 1, 0]
    assert r.num_dropped == 3 and r.free_kv_positions == range(P + 2, P + 4)
    with pytest.raises(InvalidTransition):
        state.on_fast_token(5)


def test_length_limit_applies_to_committed_tokens():
    state = started(window=8, max_new_tokens=4)
    propose(state, [1, 2, 3])
    assert state.needs_verification()  # 4 tokens: the fast path may not go on
    r = state.apply_verification([1, 2, 3])
    assert r.finish == FinishReason("length", 4) and len(state.out) == 4


def test_finish_hook_sees_committed_tokens_only():
    seen = []

    def hook(committed):
        seen.append(list(committed))
        return "stop-string" if list(committed[-2:]) == [2, 3] else None

    state = started(window=4, finish_hook=hook)
    propose(state, [2, 3, 4, 5])
    r = state.apply_verification([2, 3, 9, 9])
    assert r.finish == "stop-string" and state.out == [100, 2, 3]
    assert seen == [[100], [100, 2], [100, 2, 3]]


def test_prefill_token_can_finish_the_request():
    state = DeterministicRequest(P, 4, stop_token_ids=[0])
    r = state.on_prefill_token(0)
    assert state.finished and r.finish == FinishReason("stop_token", 0)
    assert not state.needs_verification(True)


def test_retraction_restarts_without_resending():
    state = started(window=2)
    propose(state, [1, 2])
    state.apply_verification([1, 2])
    propose(state, [3])
    plan = state.retract()
    assert plan.num_already_streamed == 3 and plan.free_kv_positions == range(0, P + 3)
    assert state.phase is Phase.PREFILL and state.out == [] and state.kv_len == 0
    assert state.on_prefill_token(100).stream == range(3, 3)
    propose(state, [1, 2])
    assert state.apply_verification([1, 2]).stream == range(3, 3)
    propose(state, [3, 4])
    r = state.apply_verification([3, 4])
    assert r.stream == range(3, 5) and state.num_restarts == 1


def test_restart_that_diverges_is_a_violation():
    state = started(window=2)
    propose(state, [1, 2])
    state.apply_verification([1, 2])
    state.retract()
    state.on_prefill_token(100)
    propose(state, [1, 2])
    with pytest.raises(DeterminismViolation):
        state.apply_verification([1, 3])


def test_invalid_transitions():
    state = DeterministicRequest(P, 4)
    with pytest.raises(InvalidTransition):
        state.on_fast_token(1)
    with pytest.raises(InvalidTransition):
        state.verify_window()
    state.on_prefill_token(1)
    with pytest.raises(InvalidTransition):
        state.on_prefill_token(1)
    with pytest.raises(InvalidTransition):
        state.verify_window()  # nothing unverified
    with pytest.raises(ValueError):
        DeterministicRequest(0, 4)
    with pytest.raises(ValueError):
        DeterministicRequest(P, 0)


# ---- simulation ---------------------------------------------------------------------------------

VOCAB = 13
STOP = 0


def true_next(prompt, output):
    """The 'model' a verifier computes exactly: a pure function of the sequence so far."""
    digest = hashlib.blake2b(repr((prompt, output)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") % VOCAB


def reference_output(prompt, max_new_tokens):
    out = []
    while True:
        out.append(true_next(prompt, out))
        if len(out) >= max_new_tokens or out[-1] == STOP:
            return out


class KVModel:
    """Which input token (and which writer) each KV position holds, to check the slot bookkeeping."""

    def __init__(self):
        self.slots = {}

    def write(self, position, token, writer):
        self.slots[position] = (token, writer)

    def free(self, positions):
        for p in positions:
            assert p in self.slots, f"freeing unallocated KV position {p}"
            del self.slots[p]

    def check(self, state, prompt):
        assert set(self.slots) == set(range(state.kv_len))
        seq = list(prompt) + state.out
        for p, (token, writer) in self.slots.items():
            assert token == seq[p]
            if p < state.prompt_len + state.num_committed - 1:
                assert writer in ("prefill", "verify"), f"committed KV at {p} written by {writer}"


@settings(max_examples=300, deadline=None)
@given(
    prompt=st.lists(st.integers(1, VOCAB - 1), min_size=1, max_size=6),
    window=st.integers(1, 9),
    max_new_tokens=st.integers(1, 40),
    error_rate=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    data=st.data(),
)
def test_simulated_serving_commits_exactly_the_reference(prompt, window, max_new_tokens, error_rate, data):
    prompt = tuple(prompt)
    expected = reference_output(prompt, max_new_tokens)
    state = DeterministicRequest(len(prompt), window, max_new_tokens=max_new_tokens, stop_token_ids=[STOP])
    kv, streamed = KVModel(), []
    retractions_left = data.draw(st.integers(0, 2), label="retractions")

    while not state.finished:
        if state.phase is Phase.PREFILL:
            kv.slots.clear()
            for p, t in enumerate(prompt):
                kv.write(p, t, "prefill")
            result = state.on_prefill_token(true_next(prompt, []))
        elif state.can_decode():
            kv.write(len(prompt) + len(state.out) - 1, state.out[-1], "fast")
            token = true_next(prompt, state.out)
            if data.draw(st.floats(0, 1), label="u") < error_rate:
                token = data.draw(st.integers(0, VOCAB - 1), label="wrong token")
            finished_fast = token == STOP or len(state.out) + 1 >= max_new_tokens
            state.on_fast_token(token)
            assert state.num_unverified <= window
            if retractions_left and data.draw(st.booleans(), label="retract"):
                retractions_left -= 1
                plan = state.retract()
                assert plan.num_already_streamed == len(streamed)
                continue
            if not state.needs_verification(finished_fast):
                kv.check(state, prompt)
                continue
            window_ = state.verify_window()
            for p, t in zip(window_.input_positions, window_.input_ids):
                assert p in kv.slots, "the verifier rewrites allocated slots only"
                kv.write(p, t, "verify")
            answer = [true_next(prompt, state.out[: state.num_committed + j]) for j in range(window_.num_tokens)]
            result = state.apply_verification(answer)
            kv.free(result.free_kv_positions)
            assert result.num_accepted <= window_.num_tokens
        else:
            pytest.fail(f"stuck: neither decodable nor verifiable: {state.__dict__}")
        streamed += [state.out[i] for i in result.stream]
        kv.check(state, prompt)
        assert state.committed_ids == expected[: state.num_committed]

    assert state.out == expected and streamed == expected
    if len(expected) >= max_new_tokens:
        assert state.finish == FinishReason("length", max_new_tokens)
    else:
        assert state.finish == FinishReason("stop_token", STOP)


@settings(max_examples=200, deadline=None)
@given(window=st.integers(1, 16), data=st.data())
def test_random_mismatch_position(window, data):
    u = data.draw(st.integers(1, window), label="unverified")
    m = data.draw(st.integers(0, u), label="first mismatch (u = none)")
    state = DeterministicRequest(P, window)
    state.on_prefill_token(100)
    proposals = list(range(1, u + 1))
    propose(state, proposals)
    state.needs_verification(finished_by_fast_path=u < window)
    verifier = proposals[:m] + [1000 + j for j in range(m, u)]
    r = state.apply_verification(verifier)
    expected_new = proposals[:m] + ([1000 + m] if m < u else [])
    assert list(r.committed_ids) == expected_new and r.num_accepted == m
    assert r.num_dropped == u - m
    assert len(r.free_kv_positions) == max(u - m - 1, 0)
    assert state.out == [100] + expected_new and state.num_unverified == 0
    assert r.kv_len == P + len(state.out) - 1 == state.kv_len


def test_windows_stay_aligned_to_blocks_after_a_rollback():
    state = started(window=4, first=100)
    propose(state, [1, 2, 3, 4])
    state.apply_verification([1, 9, 3, 4])  # commits 1 and the verifier's 9: C = 3
    assert state.out == [100, 1, 9] and state.num_replayed == 2
    propose(state, [5, 6])  # the block's 4 inputs are 100, 1, 9, 5: full after 2 proposals
    assert state.needs_verification() and not state.can_decode()
    w = state.verify_window()
    assert w.replay_ids == (100, 1) and w.input_ids == (9, 5) and w.row_ids == (100, 1, 9, 5)
    assert w.row_start == P and w.input_positions == (P + 2, P + 3)
    assert w.proposed_ids == (5, 6) and w.sample_positions == (P + 3, P + 4)
    state.apply_verification([5, 6])
    assert state.num_committed == 5 and state.num_replayed == 0  # next block starts at out[4]
    propose(state, [7])
    assert state.verify_window().row_start == P + 4
