"""Shared fixtures. The embedded model is loaded at most once per precision per test session, its
tokenizer once, and the app's registry is changed only through ModelRegistry's public methods."""
from __future__ import annotations

import random
import zlib

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from explorer.model.loading import LoadConfig, LoadedModel, embedded_model_dir, load_model


def pytest_runtest_setup(item):
    """Every test draws its random inputs (torch.randint, randn, tiny models' weights) from a seed of
    its own, fixed by its name: a failure comes back on the next run, whatever ran before. Seeded
    before the test's fixtures are set up, so a module's fixture made for its first test is seeded too."""
    seed = zlib.crc32(item.nodeid.encode())
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def pytest_collection_modifyitems(config, items):
    """A browser test runs once more if it fails. Streamlit's front end can lose a click that lands
    while a fragment is still redrawing (seen about once per CI run, each time in another test); the
    rerun is listed in the summary ("RERUN"), so a flake stays visible, and a test failing twice is red."""
    for item in items:
        if item.get_closest_marker("browser") and not item.get_closest_marker("flaky"):
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=2))


@pytest.fixture(scope="session")
def embedded_tokenizer():
    """The embedded model's tokenizer: what tiny test models are saved with, so their ids are real."""
    return AutoTokenizer.from_pretrained(str(embedded_model_dir()))


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory, embedded_tokenizer) -> str:
    """A tiny random Llama saved with the embedded tokenizer: loads and generates in seconds."""
    from tests.tiny_models import save_tiny_folder

    return str(save_tiny_folder("llama", tmp_path_factory.mktemp("tiny") / "llama", embedded_tokenizer))


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
    """The app's process-wide registry with no resident model; whatever a test puts there is freed after,
    and a model that was resident before (lent by another fixture) is given back, not unloaded."""
    from pages._common import registry

    reg = registry()
    before = reg.detach()
    yield reg
    reg.unload()
    if before is not None and not before.retired:
        reg.adopt(before)


@pytest.fixture
def registry_with(empty_registry):
    """Lend a loaded model (a session fixture's) to the app's registry for one test, and take it back
    unharmed: `registry_with(embedded_nf4)`."""
    lent: list[LoadedModel] = []

    def lend(loaded: LoadedModel):
        lent.append(loaded)
        empty_registry.adopt(loaded)
        return empty_registry

    yield lend
    if any(empty_registry.current is m for m in lent):
        empty_registry.detach()
