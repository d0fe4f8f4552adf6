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
    draw_keys,
    mix64,
    position_keys,
    request_seed,
    token_uniform,
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
    large = draw_keys(seeds, positions)
    small = np.concatenate([draw_keys(seeds[i : i + 5], positions[i : i + 5]) for i in range(0, 100, 5)])
    assert large.dtype == small.dtype == np.float64
    assert np.array_equal(large, small)


def test_draw_keys_are_exact_53_bit_integers_distinct_per_position():
    keys = draw_keys([12345] * 100000, range(100000))
    assert np.all((keys >= 0) & (keys < 2.0**53) & (keys == np.floor(keys)))
    assert len(np.unique(keys)) == len(keys)
    expected = [mix64(mix64(12345) + p * 0x9E3779B97F4A7C15) >> 11 for p in range(5)]
    assert [int(k) for k in keys[:5]] == expected


def test_token_uniforms_are_uniform_distinct_and_unrelated_between_keys():
    import torch

    from sglang_tokenweave.determinism.seeds import token_uniforms

    keys = torch.from_numpy(draw_keys([12345, 12346], [7, 7]))
    u = token_uniforms(keys, 100000).numpy()
    assert np.all((u > 0) & (u < 1))
    assert len(np.unique(u[0])) == u.shape[1]
    assert abs(u[0].mean() - 0.5) < 0.005
    counts = np.histogram(u[0], bins=10, range=(0, 1))[0]
    assert np.all(np.abs(counts - 10000) < 600)
    assert abs(np.corrcoef(u[0], u[1])[0, 1]) < 0.02  # a neighbouring seed: unrelated numbers
    # The tensor version computes the scalar definition, bit for bit, at the ends of the range too.
    rng = np.random.default_rng(3)
    extremes = torch.tensor([0.0, 2.0**53 - 1, float(rng.integers(0, 2**53))], dtype=torch.float64)
    tokens = [0, 1, 99999]
    got = token_uniforms(extremes, 100000)[:, tokens]
    assert got.tolist() == [[token_uniform(int(k), t) for t in tokens] for k in extremes.tolist()]
    assert 0 < got.min() and got.max() < 1


def test_position_keys_reject_bad_input():
    with pytest.raises(ValueError):
        position_keys([1, 2], [0])
    with pytest.raises(ValueError):
        position_keys([1], [-1])


def test_draw_keys_on_the_device_are_the_host_draw_keys():
    import random

    import torch

    from sglang_tokenweave.determinism.seeds import draw_keys_on_device, seed_key

    rng = random.Random(5)
    seeds = [rng.getrandbits(64) for _ in range(500)] + [0, (1 << 64) - 1, 1 << 63]
    positions = [rng.randrange(0, 1 << 45) for _ in seeds]
    keys = torch.tensor([seed_key(s) for s in seeds], dtype=torch.int64)
    got = draw_keys_on_device(keys, torch.tensor(positions, dtype=torch.int64))
    assert torch.equal(got, torch.from_numpy(draw_keys(seeds, positions)))
