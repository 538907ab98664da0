import pytest_twisted

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
