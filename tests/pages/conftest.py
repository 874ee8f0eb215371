"""Fixtures shared by the page tests (AppTest)."""
from __future__ import annotations

import pytest


@pytest.fixture
def no_model(monkeypatch, empty_registry):
    """No resident model, and none autoloaded: these tests run on a capture alone."""
    monkeypatch.setenv("EXPLORER_AUTOLOAD", "0")
    return empty_registry


@pytest.fixture
def embedded_resident(embedded_nf4, registry_with, monkeypatch):
    """The embedded model (the test session's, in nf4) resident in the app's registry for one test,
    lent through the registry's public methods and taken back unharmed; no autoload."""
    monkeypatch.setenv("EXPLORER_AUTOLOAD", "0")
    registry_with(embedded_nf4)
    return embedded_nf4
