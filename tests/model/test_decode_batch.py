"""The decode core's joins, token choices and GPU attention switch (issue 17 leftovers), on real models.

Joiners are prefilled together in one left-padded forward (within a token budget per step), each
row's next token is chosen for the whole batch at once, and a greedy row still decodes exactly the
answer it decodes alone.
"""
from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from explorer.model.decode_attention import no_cudnn_attention
from explorer.model.decode_batch import AllSet, DecodeBatch, Row, decode_all
from explorer.model.generation import GenerateOptions, conversation, generate, prepare, result_of
from explorer.model.loading import LoadConfig, embedded_model_dir, load_model
from explorer.model.prompts import stop_ids
from tests.tiny_models import save_tiny_folder

PROMPTS = ["Hi", "A much longer prompt that needs left padding when it is prefilled with the others",
           "Tell me a story about a cat", "Why?"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    folder = save_tiny_folder("llama", tmp_path_factory.mktemp("decode") / "llama", tokenizer)
    return load_model(LoadConfig(source=str(folder), precision="fp32"))


class PrefillCounter:
    """Counts the model's multi-token forwards (prefills) and the rows each one carried."""

    def __init__(self, model) -> None:
        self.batches: list[int] = []
        self.handle = model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, _module, _args, kwargs):
        ids = kwargs["input_ids"]
        if ids.shape[1] > 1:
            self.batches.append(ids.shape[0])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def rows_of(loaded, options, prompts=PROMPTS):
    return [Row(prepare(loaded, conversation(p), options.max_new_tokens), options) for p in prompts]


def alone(loaded, options, prompts=PROMPTS):
    return [generate(loaded, conversation(p), options).sequence_ids for p in prompts]


@pytest.mark.parametrize("exact", [True, False])
def test_rows_that_join_together_are_prefilled_in_one_forward_and_decode_what_they_decode_alone(tiny, exact):
    options = GenerateOptions(max_new_tokens=12, min_new_tokens=12)
    expected = alone(tiny, options)
    rows = rows_of(tiny, options)
    with PrefillCounter(tiny.model) as counter:
        decode_all(DecodeBatch(tiny.model, stop_ids(tiny), exact=exact), rows)
    assert counter.batches == [len(PROMPTS)]
    assert [result_of(tiny, r).sequence_ids for r in rows] == expected


def test_a_prefill_budget_spreads_joiners_over_steps_while_the_running_rows_decode(tiny):
    """With room for one prompt a step, each joiner gets its own prefill, and the first row has
    already decoded tokens when the last one starts: a long queue of joiners does not stall it."""
    options = GenerateOptions(max_new_tokens=10, min_new_tokens=10)
    expected = alone(tiny, options)
    rows = rows_of(tiny, options)
    budget = max(r.prepared.input_ids.shape[1] for r in rows)
    with PrefillCounter(tiny.model) as counter:
        batch = DecodeBatch(tiny.model, stop_ids(tiny), prefill_tokens=budget)
        for row in rows:
            batch.add(row)
        batch.step()
        assert len(rows[0].new) == 1 and rows[-1].started is None
        while batch.active:
            batch.step()
    assert counter.batches == [1, 1, 1, 1]
    assert rows[0].first < rows[-1].started
    assert [result_of(tiny, r).sequence_ids for r in rows] == expected


def test_the_embedded_model_in_nf4_decodes_longer_answers_the_same_after_a_shared_prefill(embedded_nf4):
    options = GenerateOptions(max_new_tokens=24, min_new_tokens=24)
    prompts = ["What is the capital of France?", "Name a colour.", "Write one sentence about the sea and ships.",
               "Say hello."]
    expected = alone(embedded_nf4, options, prompts)
    rows = rows_of(embedded_nf4, options, prompts)
    with PrefillCounter(embedded_nf4.model) as counter:
        decode_all(DecodeBatch(embedded_nf4.model, stop_ids(embedded_nf4)), rows)
    assert counter.batches == [len(prompts)]
    assert [result_of(embedded_nf4, r).sequence_ids for r in rows] == expected


def test_each_row_keeps_its_settings_when_tokens_are_chosen_for_the_whole_batch(tiny):
    """Greedy, penalised and min-length rows equal themselves alone; a sampling row samples; a row
    with an impossible temperature fails alone and the others finish."""
    greedy = GenerateOptions(max_new_tokens=8)
    penalised = GenerateOptions(max_new_tokens=8, repetition_penalty=1.8)
    long = GenerateOptions(max_new_tokens=8, min_new_tokens=8)
    sampled = GenerateOptions(max_new_tokens=8, min_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.95)
    broken = GenerateOptions(max_new_tokens=8, do_sample=True, temperature=-1.0)
    settings = [greedy, penalised, long, sampled, broken]
    prompts = PROMPTS + ["One more"]
    rows = [Row(prepare(tiny, conversation(p), o.max_new_tokens), o) for p, o in zip(prompts, settings)]
    torch.manual_seed(0)
    decode_all(DecodeBatch(tiny.model, stop_ids(tiny)), rows)
    for i in range(3):
        assert rows[i].error is None
        assert rows[i].ids == generate(tiny, conversation(prompts[i]), settings[i]).sequence_ids
    assert rows[3].error is None and len(rows[3].new) == 8
    assert isinstance(rows[4].error, ValueError) and rows[4].new == []


def test_a_shared_prefill_is_cancelled_only_when_every_joiner_stopped(tiny):
    rows = rows_of(tiny, GenerateOptions(max_new_tokens=4), PROMPTS[:2])
    stopped = AllSet(r.stop_event for r in rows)
    rows[0].stop_event.set()
    assert not stopped.is_set()
    rows[1].stop_event.set()
    assert stopped.is_set()


def test_decode_forwards_on_a_gpu_run_without_cudnn_attention_and_restore_it():
    """cuDNN's attention graphs are cached per thread and per exact shape: decode shapes change at
    every step, so these forwards turn it off (on CPU nothing is touched)."""
    before = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(True)
    try:
        with no_cudnn_attention(torch.device("cuda")):
            assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.cudnn_sdp_enabled()
        with no_cudnn_attention(torch.device("cuda"), keep=True):
            assert torch.backends.cuda.cudnn_sdp_enabled()
        with no_cudnn_attention(torch.device("cpu")):
            assert torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)
