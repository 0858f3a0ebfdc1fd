"""Fixtures for the SDK tests: the SDK importable from the working tree, and a fake service."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # fake_server
try:
    import ntk_client  # noqa: F401  (installed: pip install -e clients/python)
except ImportError:
    sys.path.insert(0, str(HERE.parents[1] / "clients" / "python"))

from fake_server import FAST, FakeServer  # noqa: E402

from ntk_client import AsyncClient, Client  # noqa: E402



@pytest.fixture(scope="session")
def _shared_server():
    with FakeServer() as server:
        yield server


@pytest.fixture
def fake(_shared_server):
    """The shared fake server, its scripted state wiped for this test."""
    _shared_server.state.reset()
    yield _shared_server
    _shared_server.state.reset()


@pytest.fixture
def client(fake):
    with Client(fake.url, **FAST) as c:
        yield c


@pytest.fixture
def make_async(fake):
    """Build an AsyncClient for the fake inside the test's own event loop."""
    def make(**options):
        return AsyncClient(fake.url, **{**FAST, **options})
    return make


@pytest.fixture(autouse=True)
def _no_sdk_environment(request, monkeypatch):
    # A developer's NTK_URL / NTK_API_KEY must not leak into what the tests send to the fake
    # server; the live tests, though, talk to a service that may want that key.
    if request.module.__name__.endswith("test_live"):
        return
    monkeypatch.delenv("NTK_URL", raising=False)
    monkeypatch.delenv("NTK_API_KEY", raising=False)
