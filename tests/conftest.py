import pytest

from serving import Server


@pytest.fixture(scope="module")
def start_server(tmp_path_factory):
    """Factory: ``start_server(args, env=None, small_pool=True)`` -> Server, killed (whole tree) at
    module end."""
    servers = []

    def start(args, env=None, small_pool=True):
        log = tmp_path_factory.mktemp("server") / "server.log"
        server = Server(list(args), log, env, small_pool)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()
