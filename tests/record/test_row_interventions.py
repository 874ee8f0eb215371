"""Interventions on one row of a shared decode batch (record/row_interventions.py): an answer with
heads off decodes beside plain answers, in the same forwards, and every row is token for token what
it is alone, the edited one as under hooks on the whole model, the others as if nothing were on."""
from __future__ import annotations

import pytest

from explorer.analyse.intervention_effects import answer_with, generate_with
from explorer.model.decode_batch import DecodeBatch, Row, decode_all
from explorer.model.generation import GenerateOptions, conversation, generate, prepare, result_of
from explorer.model.loading import LoadConfig, load_model
from explorer.model.prompts import stop_ids
from explorer.model.worker import ModelWorker
from explorer.model.worker_stream import WorkerStream, gather
from explorer.record.intervention_hooks import intervene
from explorer.record.interventions import BadIntervention, parse
from explorer.record.row_interventions import RowInterventions, row_safe
from tests.tiny_models import save_tiny_folder

PROMPTS = ["Hi", "A much longer prompt that needs left padding when it is prefilled with the others",
           "Tell me a story about a cat", "Why?"]
EDITS = {1: "h0.0,h0.1,h1.2x0.5,skip:mlp0", 3: "skip:attn0,skip:attn1,n2.5,n2.7x3"}   # row -> specs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, embedded_tokenizer):
    folder = save_tiny_folder("llama", tmp_path_factory.mktemp("rowedit") / "llama", embedded_tokenizer)
    return load_model(LoadConfig(source=str(folder), precision="fp32"))


@pytest.fixture
def worker(tmp_path, embedded_tokenizer):
    w = ModelWorker(status_file=tmp_path / "status.json")
    folder = save_tiny_folder("llama", tmp_path / "llama", embedded_tokenizer)
    w.adopt(load_model(LoadConfig(source=str(folder), precision="fp32")))
    yield w
    w.unload()
    w.shutdown()


def no_hooks_left(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def alone(loaded, prompt: str, specs: str | None, options: GenerateOptions) -> list[int]:
    """The reference: the answer decoded by itself, with hooks on the whole model when it has specs."""
    if specs is None:
        return generate(loaded, conversation(prompt), options).sequence_ids
    with intervene(loaded.model, parse(specs)):
        return generate(loaded, conversation(prompt), options).sequence_ids


@pytest.mark.parametrize("exact", [True, False])
def test_edited_rows_decode_beside_plain_rows_and_each_equals_its_answer_alone(tiny, exact):
    """Row 0 ends after 3 tokens, so the edited rows' batch indices shift mid-answer; each edit
    must follow its row."""
    lengths = [3, 14, 14, 14]
    options = [GenerateOptions(max_new_tokens=n, min_new_tokens=n) for n in lengths]
    rows = [Row(prepare(tiny, conversation(p), o.max_new_tokens), o,
                edit=RowInterventions(tuple(parse(EDITS[i]))) if i in EDITS else None)
            for i, (p, o) in enumerate(zip(PROMPTS, options, strict=True))]
    decode_all(DecodeBatch(tiny.model, stop_ids(tiny), exact=exact), rows)
    got = [result_of(tiny, r).sequence_ids for r in rows]
    want = [alone(tiny, p, EDITS.get(i), o) for i, (p, o) in enumerate(zip(PROMPTS, options, strict=True))]
    assert got == want
    plain = [alone(tiny, p, None, o) for p, o in zip(PROMPTS, options, strict=True)]
    assert got[1] != plain[1] and got[3] != plain[3]          # the edits changed their rows' answers
    assert max(r.peers for r in rows) == len(PROMPTS) - 1     # all four shared the forwards
    assert no_hooks_left(tiny.model)


def test_only_row_local_interventions_ride_a_batch(tiny):
    assert row_safe(parse("h3.1,h2.0x0.5,n1.4,skip:attn2"))
    for specs in ("mean:h1.1", "patch:r1@2", "h1.1,mean:h2.0", ""):
        assert not row_safe(parse(specs))
        with pytest.raises(BadIntervention):
            RowInterventions(tuple(parse(specs)))
    with pytest.raises(BadIntervention, match="heads 0 to 3"):            # checked before any forward
        generate(tiny, conversation("Hi"), GenerateOptions(max_new_tokens=2), edit=RowInterventions((parse("h1.9")[0],)))
    assert no_hooks_left(tiny.model)


def test_answer_with_decodes_the_plain_and_the_changed_answer_in_one_batch(tiny):
    messages = conversation(PROMPTS[2])
    options = GenerateOptions(max_new_tokens=10, min_new_tokens=10, do_sample=True)
    pair = answer_with(tiny, messages, parse(EDITS[3]), options, plain_too=True)
    greedy = GenerateOptions(max_new_tokens=10, min_new_tokens=10)
    assert pair.plain.shared_with == pair.changed.shared_with == 1
    assert pair.plain.sequence_ids == alone(tiny, PROMPTS[2], None, greedy)
    assert pair.changed.sequence_ids == alone(tiny, PROMPTS[2], EDITS[3], greedy)
    mean = generate_with(tiny, messages, parse("mean:h1.1"), greedy)   # not row-local: hooks on the whole model
    with intervene(tiny.model, parse("mean:h1.1")):
        assert mean.sequence_ids == generate(tiny, messages, greedy).sequence_ids
    assert no_hooks_left(tiny.model)


def test_on_the_worker_an_edited_answer_shares_the_class_batch_and_the_others_stay_plain(worker, tiny):
    """Three sessions chat while a fourth asks for its answer with heads off: one decode batch,
    each answer what it is alone."""
    options = GenerateOptions(max_new_tokens=12, min_new_tokens=12)
    edit = RowInterventions(tuple(parse(EDITS[1])))
    streams = [WorkerStream(worker, conversation(p), options, f"S{i}", edit=edit if i == 1 else None)
               for i, p in enumerate(PROMPTS)]
    results = gather(streams)
    for i, (p, result) in enumerate(zip(PROMPTS, results, strict=True)):
        assert result.sequence_ids == alone(tiny, p, EDITS[1] if i == 1 else None, options), i
    assert max(r.shared_with for r in results) == len(PROMPTS) - 1
    assert no_hooks_left(worker.current.model)            # removed before the answers were handed back


def test_on_the_worker_a_bad_edit_fails_only_its_own_request(worker, tiny):
    options = GenerateOptions(max_new_tokens=6, min_new_tokens=6)
    bad = WorkerStream(worker, conversation("Hi"), options, "A", edit=RowInterventions((parse("h7.0")[0],)))
    good = WorkerStream(worker, conversation("Why?"), options, "B")
    with pytest.raises(BadIntervention, match="layers 0 to 2"):
        "".join(bad)
    assert "".join(good) == generate(tiny, conversation("Why?"), options).text


@pytest.mark.slow
def test_the_embedded_model_in_nf4_answers_with_heads_off_in_a_batch_as_it_does_alone(embedded_nf4):
    heads = ",".join(f"h{layer}.{head}" for layer in (0, 1) for head in range(9))
    prompts = ["What is the capital of France?", "Name a colour.", "Say hello."]
    options = GenerateOptions(max_new_tokens=16, min_new_tokens=16)
    edit = RowInterventions(tuple(parse(heads)))
    rows = [Row(prepare(embedded_nf4, conversation(p), 16), options, edit=edit if i == 0 else None)
            for i, p in enumerate(prompts)]
    decode_all(DecodeBatch(embedded_nf4.model, stop_ids(embedded_nf4)), rows)
    got = [result_of(embedded_nf4, r).sequence_ids for r in rows]
    assert got == [alone(embedded_nf4, p, heads if i == 0 else None, options) for i, p in enumerate(prompts)]
    assert got[0] != alone(embedded_nf4, prompts[0], None, options)
    assert no_hooks_left(embedded_nf4.model)
