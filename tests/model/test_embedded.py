"""The embedded SmolLM2: real answers and the memory that 4-bit saves."""
import pytest

from explorer.model.generation import GenerateOptions, conversation, generate, stream_generate

pytestmark = pytest.mark.slow


def test_bf16_greedy_answer_names_paris(embedded_bf16):
    result = generate(embedded_bf16, conversation("What is the capital of France?"), GenerateOptions(max_new_tokens=24))
    assert "Paris" in result.text


def test_nf4_footprint_is_under_half_of_bf16(embedded_nf4, embedded_bf16):
    assert embedded_nf4.precision == "nf4"
    # bitsandbytes leaves the embeddings (49152 × 576, a fifth of the weights) unquantized in the compute
    # dtype, so fp32 compute (the choice on a CPU without native bf16) keeps them at 4 bytes a weight
    limit = 0.5 if embedded_nf4.compute_dtype in {"bf16", "fp16"} else 0.65
    assert embedded_nf4.footprint_bytes < limit * embedded_bf16.footprint_bytes


def test_nf4_streams_an_answer(embedded_nf4):
    stream = stream_generate(embedded_nf4, conversation("What is the capital of France?"),
                             GenerateOptions(max_new_tokens=16))
    chunks = [c for c in stream if c]
    assert len(chunks) >= 2 and "Paris" in stream.result.text
