import pytest

from sglang_tokenweave.comm.sharding import all_owned_rows, owned_rows


@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("tokens", [0, 1, 2, 3, 7, 8, 9, 128, 1000, 1023, 4097])
def test_shares_tile_the_rows_in_order(world, tokens):
    shares = all_owned_rows(tokens, world)
    assert shares[0][0] == 0 and shares[-1][1] == tokens
    for (s0, e0), (s1, e1) in zip(shares, shares[1:]):
        assert e0 == s1  # contiguous, no gap, no overlap
    sizes = [e - s for s, e in shares]
    assert max(sizes) - min(sizes) <= 1  # balanced
    assert sizes == sorted(sizes, reverse=True)  # the extra rows go to the first ranks


def test_fewer_tokens_than_ranks_leaves_last_ranks_empty():
    assert all_owned_rows(3, 4) == [(0, 1), (1, 2), (2, 3), (3, 3)]
    assert all_owned_rows(1, 8)[1:] == [(1, 1)] * 7


def test_uneven_split():
    assert all_owned_rows(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]


@pytest.mark.parametrize("args", [(-1, 2, 0), (4, 0, 0), (4, 2, 2), (4, 2, -1)])
def test_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        owned_rows(*args)
