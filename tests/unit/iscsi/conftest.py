import pytest

from tests.unit.iscsi.harness import Initiator


@pytest.fixture
def initiator() -> Initiator:
    stub = Initiator()
    reply = stub.login()
    assert reply.status_class == 0
    return stub
