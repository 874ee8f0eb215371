"""Fixtures shared by the page tests (AppTest)."""
from __future__ import annotations

import pytest


@pytest.fixture
def no_model(monkeypatch, empty_registry):
    """No resident model, and none autoloaded: these tests run on a capture alone."""
    monkeypatch.setenv("EXPLORER_AUTOLOAD", "0")
    return empty_registry
