import pytest

from sglang_tokenweave.comm.launch_shape import LaunchShape, default_vecs_per_thread, make_shape, shape_error
from sglang_tokenweave.comm.multicast import multimem_refusal
from sglang_tokenweave.comm.plan import MULTIMEM, ONESHOT, SHARDED, make_plan


@pytest.mark.parametrize("hidden", [64, 2048, 4096, 5120, 7168, 8192, 12288, 16384])
def test_default_shape_covers_every_vector_once(hidden):
    shape = make_shape(hidden, num_blocks=16)
    nvec = hidden // 8
    # lanes * vecs_per_thread cover the row; no more than one warp of idle lanes per row
    assert shape.threads_per_row * shape.vecs_per_thread >= nvec
    assert shape.threads_per_row - (-(-nvec // shape.vecs_per_thread)) < 32
    assert shape_error(shape, hidden) == ""


def test_vecs_per_thread_depends_on_hidden_only():
    assert [default_vecs_per_thread(h) for h in (2048, 8192, 8200, 16384)] == [1, 1, 4, 4]
    with pytest.raises(ValueError):
        default_vecs_per_thread(16384 * 2 + 8)


@pytest.mark.parametrize("shape, why", [
    (LaunchShape(16, 3, 256, 1), "vecs_per_thread"),
    (LaunchShape(16, 1, 100, 1), "multiple of 32"),
    (LaunchShape(16, 1, 512, 1), "cover"),
    (LaunchShape(16, 2, 512, 2), "block limit"),
    (LaunchShape(0, 1, 1024, 1), "num_blocks"),
])
def test_bad_shapes_are_named(shape, why):
    assert why in shape_error(shape, 8192)


def test_plan_shards_rows_and_oneshot_takes_all():
    p = make_plan(1000, 4, 3, 8192)
    assert (p.mode, p.row_begin, p.row_end) == (SHARDED, 750, 1000)
    p = make_plan(5, 4, 3, 8192, mode=ONESHOT)
    assert (p.mode, p.row_begin, p.row_end) == (ONESHOT, 0, 5)
    p = make_plan(2, 4, 3, 8192, mode=SHARDED)
    assert (p.row_begin, p.row_end) == (2, 2)  # owns nothing, still launches for the barriers


def test_plan_is_the_same_on_every_rank_but_for_rows():
    plans = [make_plan(3000, 4, r, 5120) for r in range(4)]
    assert len({(p.mode, p.shape) for p in plans}) == 1


def test_multimem_only_when_allowed():
    with pytest.raises(ValueError):
        make_plan(100, 4, 0, 8192, mode=MULTIMEM)
    assert make_plan(100, 4, 0, 8192, multimem_allowed=True).mode == MULTIMEM


def test_multimem_refusal_reasons():
    on = {}
    assert multimem_refusal(True, 0xABC000, on) == ""
    assert "not requested" in multimem_refusal(False, 0xABC000, on)
    assert "no multicast mapping" in multimem_refusal(True, 0, on)
    for env in ({"TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}, {"NCCL_NVLS_ENABLE": "0"}, {"NVSHMEM_DISABLE_NVLS": "1"}):
        assert "switched off" in multimem_refusal(True, 0xABC000, env)


def test_measured_defaults():
    # one-shot only for the tiniest batches; TP2 needs more blocks than TP4 (see plan.py)
    assert make_plan(2, 4, 0, 8192).mode == ONESHOT
    assert make_plan(16, 4, 0, 8192).mode == SHARDED
    assert make_plan(4096, 4, 0, 8192).shape.num_blocks == 16
    assert make_plan(4096, 2, 0, 8192).shape.num_blocks == 32
    assert make_plan(4096, 2, 0, 8192, num_blocks=8).shape.num_blocks == 8
