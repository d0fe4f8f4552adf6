"""Seeds: default, per-choice derivation, and the (seed, position) draw."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sglang_tokenweave.determinism.seeds import (
    DEFAULT_SEED,
    MASK64,
    SEED_MAX,
    SEED_MIN,
    choice_seed,
    mix64,
    position_keys,
    position_uniforms,
    request_seed,
)

seeds = st.integers(SEED_MIN, SEED_MAX)


@given(seed=seeds, n=st.integers(2, 300))
def test_choice_seeds_are_distinct_and_independent_of_n(seed, n):
    derived = [choice_seed(seed, i) for i in range(n)]
    assert len(set(derived)) == n
    assert derived[:2] == [choice_seed(seed, 0), choice_seed(seed, 1)]
    assert all(0 <= s <= MASK64 for s in derived)


def test_default_seed_and_twos_complement():
    assert request_seed(None) == DEFAULT_SEED
    assert choice_seed(None, 3) == choice_seed(DEFAULT_SEED, 3)
    assert request_seed(-1) == MASK64
    assert choice_seed(-1, 0) != choice_seed(1, 0)
    for bad in (True, 1.5, "3"):
        with pytest.raises(TypeError):
            request_seed(bad)
    with pytest.raises(ValueError):
        request_seed(SEED_MAX + 1)
    with pytest.raises(ValueError):
        choice_seed(1, -1)


@given(st.lists(st.tuples(st.integers(0, MASK64), st.integers(0, 2**40)), min_size=1, max_size=80))
def test_keys_match_scalar_definition_on_both_sides_of_the_numpy_cut(pairs):
    s, p = zip(*pairs)
    expected = [mix64(mix64(a) + b * 0x9E3779B97F4A7C15) for a, b in pairs]
    assert [int(k) for k in position_keys(s, p)] == expected


def test_a_pair_draws_the_same_number_in_a_small_and_a_large_call():
    # Small calls take Python integers, large ones numpy: a row's draw must not depend on how
    # many rows were sampled with it (a fast-path step vs a verification pass).
    seeds = [-1, 0, 12345, SEED_MAX, 2**64 - 1] * 20
    positions = list(range(100))
    large = position_uniforms(seeds, positions)
    small = np.concatenate([position_uniforms(seeds[i : i + 5], positions[i : i + 5]) for i in range(0, 100, 5)])
    assert large.dtype == small.dtype == np.float64
    assert np.array_equal(large, small)


def test_uniforms_are_uniform_and_distinct_per_position():
    u = position_uniforms([12345] * 100000, range(100000))
    assert np.all((u >= 0) & (u < 1))
    assert len(np.unique(u)) == len(u)
    assert abs(u.mean() - 0.5) < 0.005
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(counts - 10000) < 600)
    # A neighbouring seed gives unrelated numbers.
    v = position_uniforms([12346] * 100000, range(100000))
    assert abs(np.corrcoef(u, v)[0, 1]) < 0.02


def test_position_keys_reject_bad_input():
    with pytest.raises(ValueError):
        position_keys([1, 2], [0])
    with pytest.raises(ValueError):
        position_keys([1], [-1])


def test_uniforms_on_the_device_are_the_host_uniforms():
    import random

    import torch

    from sglang_tokenweave.determinism.seeds import seed_key, uniforms_on_device

    rng = random.Random(5)
    seeds = [rng.getrandbits(64) for _ in range(500)] + [0, (1 << 64) - 1, 1 << 63]
    positions = [rng.randrange(0, 1 << 45) for _ in seeds]
    keys = torch.tensor([seed_key(s) for s in seeds], dtype=torch.int64)
    got = uniforms_on_device(keys, torch.tensor(positions, dtype=torch.int64))
    assert torch.equal(got, torch.from_numpy(position_uniforms(seeds, positions)))
