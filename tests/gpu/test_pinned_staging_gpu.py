"""The pinned staging ring: every copy lands intact, even when a slot is reused while the device
is still busy with earlier work."""

import numpy as np
import pytest
import torch

from sglang_tokenweave.determinism.pinned_staging import PinnedStaging, array_to_device

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def needs_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


def test_reused_slots_never_overwrite_a_copy_still_queued():
    staging = PinnedStaging(slots=3, capacity=64)  # bytes: 8 values
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(int(rng.integers(1, 9))) for _ in range(5)]
    arrays += [rng.integers(-(1 << 62), 1 << 62, int(rng.integers(1, 9))) for _ in range(5)]  # int64
    arrays += [rng.standard_normal(20)]
    torch.cuda._sleep(200_000_000)  # keep the stream busy: the copies queue behind it
    outs = [staging.to_device(a, torch.device("cuda")) for a in arrays]  # 11 copies through 3 slots
    torch.cuda.synchronize()
    for a, out in zip(arrays, outs):
        assert out.dtype == torch.from_numpy(a).dtype and out.device.type == "cuda"
        assert np.array_equal(out.cpu().numpy(), a)  # bit-exact, the last one past the capacity


@pytest.mark.parametrize("values", [np.array([0.25, -1.5, 3.0, 1e-300]), np.array([-(1 << 63), 0, 5, (1 << 63) - 1])])
def test_module_copy_matches_on_cuda_and_cpu(values):
    assert np.array_equal(array_to_device(values, "cuda").cpu().numpy(), values)
    assert np.array_equal(array_to_device(values, "cpu").numpy(), values)
