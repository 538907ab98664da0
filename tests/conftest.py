import pytest
import pytest_twisted
from twisted.logger import globalLogPublisher

from tests.support import Gateway


@pytest_twisted.async_yield_fixture
async def make_gateway():
    """Start gateways with settings overrides; stop them and their clients afterwards."""
    started = []

    def make(**overrides):
        gateway = Gateway.start(**overrides)
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        await gateway.stop()


@pytest_twisted.async_yield_fixture
async def gateway(make_gateway):
    yield make_gateway()


@pytest_twisted.async_yield_fixture
async def stub_server():
    """Start loopback HTTP stubs (external checkers, JWKS); stop them afterwards."""
    from tests.support import StubServer

    started = []

    def make(answer):
        server = StubServer(answer)
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


@pytest_twisted.async_yield_fixture
async def redis_server(tmp_path):
    """A real redis-server on a free loopback port, with no persistence (issue 6)."""
    from tests.support import RedisServer

    server = RedisServer(str(tmp_path))
    await server.start()
    yield server
    server.stop()


@pytest_twisted.async_yield_fixture
async def nats_server(tmp_path):
    """A real nats-server on a free loopback port (issue 17)."""
    from tests.support import NatsServer

    server = NatsServer(str(tmp_path))
    await server.start()
    yield server
    server.stop()


@pytest.fixture
def log_events():
    """Every log event published while the test runs."""
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest_twisted.async_yield_fixture
async def processes():
    """Start ``twistd rig`` processes and clients; kill and close them afterwards."""
    from tests.support import Processes

    started = Processes()
    yield started
    await started.close()


@pytest.fixture
def dead_port():
    """A loopback port where nothing listens, held for the test (a seed that never answers)."""
    from tests.support import refusing_port

    with refusing_port() as port:
        yield port
