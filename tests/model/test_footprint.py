"""The chat page and Architecture show one number for a loaded model's memory (issue 22 item 5)."""
from __future__ import annotations

import pytest

from explorer.analyse.architecture import describe_model
from explorer.model.footprint import resident_bytes
from tests.tiny_models import tiny_model


def test_resident_bytes_is_what_architecture_totals_for_a_tiny_model():
    model = tiny_model("llama")
    assert resident_bytes(model) == describe_model(model, "tiny").total_bytes
    assert resident_bytes(model) == model.get_memory_footprint()     # nothing quantized: nothing beside


@pytest.mark.slow
def test_nf4_memory_counts_the_quantization_state_on_both_pages(embedded_nf4):
    """NF4 keeps absmax and codebooks beside the packed weights: counted once, on every page."""
    view = describe_model(embedded_nf4.model, embedded_nf4.name)
    assert embedded_nf4.resident_bytes == view.total_bytes
    assert embedded_nf4.resident_bytes > embedded_nf4.footprint_bytes     # get_memory_footprint leaves it out
