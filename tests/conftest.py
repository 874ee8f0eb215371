"""Shared fixtures. The embedded model is loaded at most once per precision per test session."""
from __future__ import annotations

import pytest

from explorer.model.loading import LoadConfig, LoadedModel, load_model


@pytest.fixture(scope="session")
def embedded_bf16() -> LoadedModel:
    return load_model(LoadConfig(precision="bf16"))


@pytest.fixture(scope="session")
def embedded_nf4() -> LoadedModel:
    return load_model(LoadConfig(precision="nf4"))


@pytest.fixture(scope="session")
def embedded_fp32() -> LoadedModel:
    return load_model(LoadConfig(precision="fp32"))


@pytest.fixture
def empty_registry():
    """The app's process-wide registry with no resident model; whatever a test puts there is freed after."""
    from pages._common import registry

    reg = registry()
    before = reg._current
    reg._current = None
    yield reg
    reg.unload()
    reg._current = before
