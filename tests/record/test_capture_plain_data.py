"""A capture is plain data: kept in a session, it does not keep an unloaded model alive."""
from __future__ import annotations

import copy
import gc
import weakref

import torch

from explorer.analyse.attention import attention_map, capture_head_summaries
from explorer.analyse.lens import LensHead, logit_lens
from explorer.record.capture import capture
from explorer.views.readout import Readout
from tests.tiny_models import tiny_model


def test_a_kept_capture_and_its_readout_let_the_model_be_collected():
    model = tiny_model("llama")
    cap = capture(model, None, torch.randint(3, 256, (12,)))
    readout = Readout(cap, model)
    assert readout.lens_available
    lens = logit_lens(cap, LensHead.from_model(model), k=2, derived=readout.results)   # kept beside the capture
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None, "a capture or its Readout still references the model"
    # What was computed before stays readable; the attention maths needs no model.
    assert not readout.lens_from_model and readout.lens_available
    assert torch.equal(logit_lens(cap, None, k=2, derived=readout.results).token_ids, lens.token_ids)
    assert attention_map(cap, 1, 0).shape == (12, 12)
    assert capture_head_summaries(cap).entropy.shape == (3, 4, 12)


def test_a_capture_holds_no_module_or_callable():
    cap = capture(tiny_model("qwen2"), None, torch.randint(3, 256, (6,)))
    for name, value in vars(cap).items():
        assert not isinstance(value, torch.nn.Module) and not callable(value), name
    clone = copy.deepcopy(cap)                     # plain data copies without touching a model
    assert torch.equal(clone.token_ids, cap.token_ids)
