"""The token-split plan: coverage, straddling requests, threshold, alignment, determinism."""

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_tokenweave.overlap.split_plan import DEFAULT_ALIGN, plan_forward, split_align

WORLD_SIZES = (1, 2, 3, 4, 5, 6, 7, 8)
REPO_ROOT = Path(__file__).resolve().parents[2]


@st.composite
def batches(draw, max_requests=40, max_len=3000):
    n = draw(st.integers(min_value=0, max_value=max_requests))
    extend = draw(st.lists(st.integers(1, max_len), min_size=n, max_size=n))
    prefix = draw(st.lists(st.integers(0, 5000), min_size=n, max_size=n))
    padding = draw(st.integers(0, 300))
    world = draw(st.sampled_from(WORLD_SIZES))
    # None: the planner's default for the world size (what serving passes).
    given_align = draw(st.one_of(st.none(), st.sampled_from((1, 8, 16, 128 // world)).map(lambda k: world * k)))
    threshold = draw(st.one_of(st.none(), st.integers(0, 20000)))
    offset = draw(st.integers(-3000, 3000))
    return dict(
        extend_lens=extend,
        prefix_lens=prefix,
        num_tokens=sum(extend) + padding,
        world_size=world,
        given_align=given_align,
        align=given_align or split_align(world),
        threshold=threshold,
        split_offset=offset,
    )


def _plan(case):
    return plan_forward(
        case["extend_lens"],
        case["prefix_lens"],
        world_size=case["world_size"],
        threshold=case["threshold"],
        split_offset=case["split_offset"],
        align=case["given_align"],
        num_tokens=case["num_tokens"],
    )


@settings(max_examples=300, deadline=None)
@given(batches())
def test_pieces_cover_every_token_once_in_order(case):
    plan = _plan(case)
    pieces = [p for split in plan.splits for p in split.pieces]
    # Walking the pieces of all splits visits every request's tokens in batch order,
    # each token exactly once, contiguously.
    expected_row = 0
    next_start = [0] * len(case["extend_lens"])
    last_request = -1
    for p in pieces:
        assert p.length >= 1
        assert p.token_start == expected_row
        assert p.request >= last_request
        assert p.start == next_start[p.request]
        expected_row += p.length
        next_start[p.request] += p.length
        last_request = p.request
    assert next_start == case["extend_lens"]
    assert expected_row == sum(case["extend_lens"])


@settings(max_examples=300, deadline=None)
@given(batches())
def test_splits_tile_the_batch_and_hold_their_pieces(case):
    plan = _plan(case)
    assert plan.splits[0].token_start == 0
    assert plan.splits[-1].token_end == case["num_tokens"]
    for left, right in zip(plan.splits, plan.splits[1:]):
        assert left.token_end == right.token_start
    for split in plan.splits:
        for p in split.pieces:
            assert split.token_start <= p.token_start < p.token_end <= split.token_end
        # Requests in a split are contiguous, so req_pool_indices can be sliced.
        assert [p.request for p in split.pieces] == list(
            range(split.request_start, split.request_end)
        )


@settings(max_examples=300, deadline=None)
@given(batches())
def test_straddling_request_sees_its_first_part_as_prefix(case):
    plan = _plan(case)
    for split in plan.splits:
        for p in split.pieces:
            assert p.prefix_len == case["prefix_lens"][p.request] + p.start
            assert p.seq_len == p.prefix_len + p.length
            assert p.position_start == case["prefix_lens"][p.request] + p.start
    if plan.is_split:
        a, b = plan.splits
        if a.pieces and b.pieces and a.pieces[-1].request == b.pieces[0].request:
            first, second = a.pieces[-1], b.pieces[0]
            assert second.prefix_len == first.prefix_len + first.length
            assert second.start == first.start + first.length
            assert first.token_end == plan.cut == second.token_start


@settings(max_examples=300, deadline=None)
@given(batches())
def test_splits_only_at_or_above_threshold_and_when_both_halves_have_work(case):
    plan = _plan(case)
    align, real = case["align"], sum(case["extend_lens"])
    above = case["threshold"] is not None and case["num_tokens"] >= case["threshold"]
    feasible = (real - 1) // align * align >= align
    assert plan.is_split == (above and feasible)
    if plan.is_split:
        a, b = plan.splits
        assert a.num_real_tokens == a.num_tokens >= align  # A holds no padding
        assert b.num_real_tokens >= 1


@settings(max_examples=300, deadline=None)
@given(batches())
def test_cut_is_aligned_near_the_target_and_rows_are_owned_evenly(case):
    plan = _plan(case)
    world, align = case["world_size"], case["align"]
    if plan.is_split:
        assert plan.cut % align == 0
        shares = {e - s for s, e in (plan.splits[0].owned_rows(r) for r in range(world))}
        assert shares == {plan.cut // world}  # every rank owns the same share of A
        target = case["num_tokens"] // 2 + case["split_offset"]
        lowest = align
        highest = (sum(case["extend_lens"]) - 1) // align * align
        if lowest + align // 2 <= target <= highest:
            assert abs(plan.cut - target) <= align // 2
        elif target < lowest:
            assert plan.cut == lowest
        elif target > highest + align // 2:
            assert plan.cut == highest
    for split in plan.splits:
        # Owned rows tile the split, contiguous and balanced to within one row.
        owned = [split.owned_rows(r) for r in range(world)]
        assert owned[0][0] == 0 and owned[-1][1] == split.num_tokens
        for (_, end), (start, _) in zip(owned, owned[1:]):
            assert end == start
        sizes = [e - s for s, e in owned]
        assert max(sizes) - min(sizes) <= 1


@settings(max_examples=100, deadline=None)
@given(batches())
def test_plan_is_a_pure_function_of_its_inputs(case):
    first = _plan(case)
    again = _plan(dict(case, extend_lens=tuple(case["extend_lens"])))
    assert first == again
    assert hash(first) == hash(again)


def test_per_split_lists_for_a_forward_batch_cutter():
    # Three requests; the cut at 1024 lands inside the second one.
    plan = plan_forward(
        [600, 1000, 452], [0, 32, 7], world_size=4, threshold=1024, split_offset=0
    )
    assert plan.cut == 1024
    a, b = plan.splits
    assert (a.request_start, a.request_end) == (0, 2)
    assert a.extend_seq_lens == (600, 424)
    assert a.extend_prefix_lens == (0, 32)
    assert a.seq_lens == (600, 456)
    assert a.extend_start_loc == (0, 600)
    assert (b.request_start, b.request_end) == (1, 3)
    assert b.extend_seq_lens == (576, 452)
    assert b.extend_prefix_lens == (456, 7)
    assert b.seq_lens == (1032, 459)
    assert b.extend_start_loc == (0, 576)
    assert b.token_slice == slice(1024, 2052)
    assert [b.owned_rows(r) for r in range(4)] == [(0, 257), (257, 514), (514, 771), (771, 1028)]


def test_one_huge_request_is_cut_in_the_middle():
    plan = plan_forward([8192], [100], world_size=8, threshold=1024)
    a, b = plan.splits
    assert plan.cut == 4096
    assert a.pieces[0].length == 4096 and a.pieces[0].prefix_len == 100
    assert b.pieces[0].start == 4096 and b.pieces[0].prefix_len == 4196
    assert b.pieces[0].seq_len == 8292
    assert a.owned_rows(7) == b.owned_rows(7) == (3584, 4096)


def test_many_tiny_requests_never_straddle():
    plan = plan_forward([1] * 3000, [50] * 3000, world_size=2, threshold=1024)
    a, b = plan.splits
    assert plan.cut == 1536
    assert a.batch_size == 1536 and b.batch_size == 1464
    assert a.request_end == b.request_start
    assert all(p.length == 1 and p.prefix_len == 50 for p in a.pieces + b.pieces)


def test_threshold_is_inclusive():
    at = plan_forward([1024], [0], world_size=2, threshold=1024)
    below = plan_forward([1023], [0], world_size=2, threshold=1024)
    assert at.is_split and at.cut == 512
    assert not below.is_split
    assert below.splits[0].token_slice == slice(0, 1023)
    assert below.splits[0].owned_rows(1) == (512, 1023)


def test_never_splits_without_threshold():
    plan = plan_forward([5000, 5000], [0, 0], world_size=2, threshold=None)
    assert not plan.is_split and plan.cut is None
    assert plan.splits[0].batch_size == 2


def test_offset_pushes_cut_onto_a_request_boundary():
    # T = 2000: without offset the cut (1024) straddles the first request.
    straddled = plan_forward([1280, 720], [0, 0], world_size=4, threshold=1024)
    assert straddled.cut == 1024
    assert straddled.splits[1].pieces[0].request == 0
    # +256 moves the target to 1256, which rounds to the boundary at 1280.
    clean = plan_forward([1280, 720], [0, 0], world_size=4, threshold=1024, split_offset=256)
    a, b = clean.splits
    assert clean.cut == 1280
    assert [(p.request, p.start, p.length) for p in a.pieces] == [(0, 0, 1280)]
    assert [(p.request, p.start, p.length) for p in b.pieces] == [(1, 0, 720)]
    assert b.pieces[0].prefix_len == 0


def test_offset_is_clamped_so_both_splits_keep_work():
    low = plan_forward([4000], [0], world_size=2, threshold=0, split_offset=-100000)
    high = plan_forward([4000], [0], world_size=2, threshold=0, split_offset=100000)
    assert low.cut == DEFAULT_ALIGN
    assert high.cut == 3968  # the last multiple of 128 that leaves B a token
    assert high.splits[1].num_real_tokens == 32


def test_too_small_for_two_aligned_splits_runs_whole():
    plan = plan_forward([100], [0], world_size=2, threshold=0)
    assert not plan.is_split


def test_padding_rows_go_to_the_last_split_without_pieces():
    plan = plan_forward([1500, 500], [0, 0], world_size=4, threshold=1024, num_tokens=2100)
    a, b = plan.splits
    assert plan.cut == 1024
    assert b.token_end == 2100 and b.num_real_tokens == 976
    assert b.pieces[-1].token_end == 2000
    assert b.owned_rows(3) == (807, 1076)  # padding rows are owned like any other


@pytest.mark.parametrize("world, align", [(3, 384), (5, 640), (6, 384), (7, 896)])
def test_world_sizes_that_do_not_divide_128_align_to_the_lcm(world, align):
    assert split_align(world) == align
    # What serving asks for: the whole batch, and a split of a large prefill.
    whole = plan_forward([1000], [0], world_size=world, threshold=None)
    assert not whole.is_split and whole.splits[0].num_tokens == 1000
    plan = plan_forward([3000, 5000], [0, 16], world_size=world, threshold=1024)
    a, b = plan.splits
    assert plan.cut % align == 0 and abs(plan.cut - 4000) <= align // 2
    assert {e - s for s, e in (a.owned_rows(r) for r in range(world))} == {plan.cut // world}
    owned = [b.owned_rows(r) for r in range(world)]  # B's 8000 - cut rows need not divide by W
    assert owned[0][0] == 0 and owned[-1][1] == b.num_tokens
    assert max(e - s for s, e in owned) - min(e - s for s, e in owned) <= 1


def test_default_align_keeps_128_for_powers_of_two():
    assert [split_align(w) for w in (1, 2, 4, 8)] == [DEFAULT_ALIGN] * 4
    assert plan_forward([4000], [0], world_size=8, threshold=0).cut == 2048  # 2000 rounded to 128


def test_empty_batch():
    plan = plan_forward([], [], world_size=2, threshold=0)
    assert not plan.is_split
    assert plan.splits[0].pieces == () and plan.splits[0].num_tokens == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(extend_lens=[1, 2], prefix_lens=[0]), "2 extend lengths but 1 prefix"),
        (dict(extend_lens=[3, 0], prefix_lens=[0, 0]), "request 1 is 0"),
        (dict(extend_lens=[3], prefix_lens=[-1]), "prefix length of request 0"),
        (dict(extend_lens=[3], prefix_lens=[0], align=100, world_size=8), "multiple of world_size"),
        (dict(extend_lens=[3], prefix_lens=[0], align=128, world_size=3), "multiple of world_size 3"),
        (dict(extend_lens=[3], prefix_lens=[0], num_tokens=2), "less than the requests"),
        (dict(extend_lens=[3], prefix_lens=[0], world_size=0), "world_size"),
    ],
)
def test_bad_inputs_are_rejected(kwargs, message):
    args = dict(world_size=2, threshold=1024)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        plan_forward(args.pop("extend_lens"), args.pop("prefix_lens"), **args)


def test_owned_rows_rejects_foreign_rank():
    plan = plan_forward([10], [0], world_size=2, threshold=None)
    with pytest.raises(ValueError, match="rank 2"):
        plan.splits[0].owned_rows(2)


def test_overlap_package_imports_nothing_from_sglang():
    # Run in a fresh interpreter: this process may already have imported it.
    code = "import sys, sglang_tokenweave.overlap; print(sorted(m for m in ('sglang',) if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
