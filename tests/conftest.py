import pytest

from serving import Server


@pytest.fixture(scope="module")
def start_server(tmp_path_factory):
    """Factory: ``start_server(args, env=None)`` -> Server, killed (whole tree) at module end."""
    servers = []

    def start(args, env=None):
        log = tmp_path_factory.mktemp("server") / "server.log"
        server = Server(list(args), log, env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()
