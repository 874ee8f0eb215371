"""Generation on a tiny random model: templates, streaming, stopping, batching and bad prompts."""
from __future__ import annotations

import threading

import pytest
import torch

from explorer.model.generation import (
    GenerateOptions,
    GenerationError,
    conversation,
    generate,
    generate_batch,
    prepare,
    render_prompt,
    stream_generate,
)
from explorer.model.loading import LoadConfig, load_model
from tests.tiny_models import save_tiny_folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, embedded_tokenizer):
    folder = save_tiny_folder("llama", tmp_path_factory.mktemp("gen") / "llama", embedded_tokenizer)
    return load_model(LoadConfig(source=str(folder), precision="fp32"))


GREEDY = GenerateOptions(max_new_tokens=6)


def test_streamed_text_equals_plain_generate(tiny):
    stream = stream_generate(tiny, conversation("Tell me a story"), GREEDY)
    chunks = list(stream)
    plain = generate(tiny, conversation("Tell me a story"), GREEDY)
    assert "".join(chunks) == stream.result.text == plain.text
    assert stream.result.new_tokens == plain.new_tokens
    assert stream.result.time_to_first_token is not None and stream.result.time_to_first_token <= stream.result.seconds


def test_stop_event_ends_generation_early(tiny):
    event = threading.Event()
    event.set()
    stream = stream_generate(tiny, conversation("Count to a hundred"), GenerateOptions(max_new_tokens=50), event)
    list(stream)
    assert stream.result.stopped and stream.result.new_tokens <= 1


def test_failure_inside_generate_surfaces_as_an_error_not_a_hang(tiny):
    bad = GenerateOptions(max_new_tokens=4, do_sample=True, temperature=-1.0, timeout_s=20)
    with pytest.raises(GenerationError, match="Generation failed"):
        list(stream_generate(tiny, conversation("Hi"), bad))
    assert generate(tiny, conversation("Hi"), GREEDY).new_tokens >= 1  # still usable


def test_out_of_memory_is_reported_and_model_stays_usable(tiny, monkeypatch):
    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(tiny.model, "forward", exhausted)
    with pytest.raises(GenerationError, match="Out of memory"):
        list(stream_generate(tiny, conversation("Hi"), GREEDY))
    monkeypatch.undo()
    assert generate(tiny, conversation("Hi"), GREEDY).new_tokens >= 1


def test_batched_generation_matches_one_by_one(tiny):
    convs = [conversation("Hi"), conversation("A much longer prompt that needs left padding in a batch")]
    batched = generate_batch(tiny, convs, GREEDY)
    single = [generate(tiny, c, GREEDY) for c in convs]
    assert [b.text for b in batched] == [s.text for s in single]
    assert batched[0].prompt_tokens < batched[1].prompt_tokens


def test_empty_prompt_is_refused(tiny):
    with pytest.raises(GenerationError, match="empty"):
        prepare(tiny, conversation("   "), 10)


def test_prompt_longer_than_context_is_refused(tiny):
    limit = tiny.context_length
    with pytest.raises(GenerationError, match="context holds"):
        prepare(tiny, conversation("word " * (limit + 10)), 10)


def test_new_tokens_are_clamped_to_the_context(tiny):
    limit = tiny.context_length
    prepared = prepare(tiny, conversation("word " * (limit - 60)), 500)
    assert prepared.input_ids.shape[1] + prepared.max_new_tokens == limit
    assert any("fit in the context" in n for n in prepared.notices)


def test_system_prompt_is_merged_when_the_template_rejects_it(tiny):
    tok = tiny.tokenizer
    original = tok.chat_template
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}"
                         "{% endif %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}")
    try:
        text, notices = render_prompt(tok, conversation("Question?", "Be brief."))
    finally:
        tok.chat_template = original
    assert "Be brief." in text and "Question?" in text and notices


def test_plain_prompt_fallback_without_template(tiny):
    tok = tiny.tokenizer
    original, tok.chat_template = tok.chat_template, None
    try:
        text, notices = render_prompt(tok, conversation("Just text"))
    finally:
        tok.chat_template = original
    assert text == "Just text" and "no chat template" in notices[0]


# ---------------------------------------------------------------- one core, decoded together (issue 17)
BATCH_PROMPTS = ["Hi", "A much longer prompt that needs left padding in a batch", "Tell me a story about a cat",
                 "Why?"]


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi3", "gemma2"])
def test_a_greedy_answer_decoded_in_a_batch_is_token_for_token_the_answer_alone(family, tmp_path, embedded_tokenizer):
    """Left padding, per-row position ids and a row's own mask: fp32 tiny models of four layouts
    (Gemma-2's sliding window decodes as a group of its own), and transformers' own generate agrees."""
    tokenizer = embedded_tokenizer
    loaded = load_model(LoadConfig(source=str(save_tiny_folder(family, tmp_path / family, tokenizer)),
                                   precision="fp32"))
    options = GenerateOptions(max_new_tokens=16, min_new_tokens=16)
    convs = [conversation(p) for p in BATCH_PROMPTS]
    batched = generate_batch(loaded, convs, options)
    alone = [generate(loaded, c, options) for c in convs]
    assert [b.sequence_ids for b in batched] == [a.sequence_ids for a in alone]
    assert all(b.shared_with == len(convs) - 1 for b in batched) and all(a.shared_with == 0 for a in alone)
    p = prepare(loaded, convs[1], 16)
    hf = loaded.model.generate(input_ids=p.input_ids, attention_mask=p.attention_mask, do_sample=False,
                               max_new_tokens=16, min_new_tokens=16, pad_token_id=0)
    assert hf[0].tolist() == alone[1].sequence_ids


def test_each_row_keeps_its_own_settings_in_a_batch(tiny):
    """Repetition penalty and length are per row: a row with them equals that row decoded alone."""
    from explorer.model.decode_batch import Row, decode_all
    from explorer.model.generation import new_batch, result_of

    plain = GenerateOptions(max_new_tokens=10)
    penalised = GenerateOptions(max_new_tokens=5, repetition_penalty=1.8)
    rows = [Row(prepare(tiny, conversation(p), o.max_new_tokens), o)
            for p, o in zip(BATCH_PROMPTS[:2], (plain, penalised))]
    decode_all(new_batch(tiny), rows)
    together = [result_of(tiny, r) for r in rows]
    assert together[0].sequence_ids == generate(tiny, conversation(BATCH_PROMPTS[0]), plain).sequence_ids
    assert together[1].sequence_ids == generate(tiny, conversation(BATCH_PROMPTS[1]), penalised).sequence_ids
    assert together[1].new_tokens <= 5


def test_the_embedded_model_in_nf4_decodes_the_same_answers_in_a_batch(embedded_nf4):
    options = GenerateOptions(max_new_tokens=12)
    convs = [conversation(p) for p in ("What is the capital of France?", "Name a colour.", "Say hello.")]
    batched = generate_batch(embedded_nf4, convs, options)
    alone = [generate(embedded_nf4, c, options) for c in convs]
    assert [b.sequence_ids for b in batched] == [a.sequence_ids for a in alone]
    assert any(b.new_tokens > 3 for b in batched)


def test_the_gpu_path_one_masked_attention_for_all_rows_decodes_the_same_answers_in_fp32(tiny):
    """Off CPU the rows share one masked attention call (exact=False); in fp32 its answers are still
    the answers decoded alone, so padding, masks and positions are right on that path too."""
    from explorer.model.decode_batch import DecodeBatch, Row, decode_all
    from explorer.model.generation import result_of
    from explorer.model.prompts import stop_ids

    options = GenerateOptions(max_new_tokens=12, min_new_tokens=12)
    rows = [Row(prepare(tiny, conversation(p), 12), options) for p in BATCH_PROMPTS]
    batch = DecodeBatch(tiny.model, stop_ids(tiny), exact=False)
    decode_all(batch, rows)
    assert [result_of(tiny, r).sequence_ids for r in rows] == [
        generate(tiny, conversation(p), options).sequence_ids for p in BATCH_PROMPTS]
