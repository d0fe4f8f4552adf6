import pytest

from sglang_tokenweave.determinism.config import DeterminismConfig
from sglang_tokenweave.glue.determinism import runtime as runtime_module


@pytest.fixture
def fresh_runtime(monkeypatch):
    """Factory: ``fresh_runtime(**config)`` -> a new Runtime of that DeterminismConfig, the
    process's runtime until the test ends."""
    def make(**config):
        rt = runtime_module.Runtime(DeterminismConfig(**config))
        monkeypatch.setattr(runtime_module, "_runtime", rt)
        return rt
    return make
