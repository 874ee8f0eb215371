"""Interventions on tiny fp32 models of five families, each checked against an independent
recomputation: the same change made in the weights of a copy of the model, not through hooks."""
from __future__ import annotations

import copy

import pytest
import torch

from explorer.record.intervention_hooks import intervene, last_logits, record_activations, sites_of
from explorer.record.interventions import BadIntervention, HeadAblation, NeuronAblation, Patch, SkipBlock, from_json, parse, to_json, to_short
from tests.tiny_models import tiny_model, with_random_biases

FAMILIES5 = ("llama", "qwen2", "phi3", "gemma2", "gpt2")


def _ids(seed: int = 1, t: int = 11) -> torch.Tensor:
    return torch.randint(3, 250, (t,), generator=torch.Generator().manual_seed(seed))


def _columns(proj: torch.nn.Module, lo: int, hi: int) -> torch.Tensor:
    """The view of the projection's weight that multiplies inputs lo:hi (Conv1D stores it transposed)."""
    w = proj.weight.data
    return w[lo:hi, :] if type(proj).__name__ == "Conv1D" else w[:, lo:hi]


def _add_bias(proj: torch.nn.Module, extra: torch.Tensor) -> None:
    if getattr(proj, "bias", None) is None:
        proj.bias = torch.nn.Parameter(torch.zeros(extra.shape[0]), requires_grad=False)
    proj.bias.data += extra


@pytest.fixture(scope="module", params=FAMILIES5)
def model(request):
    return with_random_biases(tiny_model(request.param))


def test_zero_ablating_a_head_equals_removing_its_columns_from_the_output_projection(model):
    sites = sites_of(model)
    layer, head, hd = 1, 2, sites.head_dim
    ids = _ids()
    with intervene(model, [HeadAblation(layer, head)]):
        hooked = last_logits(model, ids)
    edited = copy.deepcopy(model)
    _columns(sites_of(edited).layers[layer].o_proj, head * hd, (head + 1) * hd).zero_()
    torch.testing.assert_close(hooked, last_logits(edited, ids), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(hooked, last_logits(model, ids), atol=1e-4)     # it changed something


def test_scaling_a_head_scales_its_columns(model):
    sites = sites_of(model)
    ids = _ids(2)
    with intervene(model, parse("h2.1x0.5")):
        hooked = last_logits(model, ids)
    edited = copy.deepcopy(model)
    _columns(sites_of(edited).layers[2].o_proj, sites.head_dim, 2 * sites.head_dim).mul_(0.5)
    torch.testing.assert_close(hooked, last_logits(edited, ids), rtol=1e-5, atol=1e-5)


def test_mean_ablation_uses_the_prompt_mean_of_that_head(model):
    """Replacing z by its prompt mean m equals zeroed columns plus W_h·m in the projection's bias."""
    sites = sites_of(model)
    layer, head, hd = 1, 3, sites.head_dim
    ids = _ids(3)
    mean = record_activations(model, ids).z[layer, :, head].mean(0)                 # (hd,)
    with intervene(model, [HeadAblation(layer, head, "mean")]):
        hooked = last_logits(model, ids)
    edited = copy.deepcopy(model)
    proj = sites_of(edited).layers[layer].o_proj
    cols = _columns(proj, head * hd, (head + 1) * hd)
    shift = (mean @ cols) if type(proj).__name__ == "Conv1D" else (cols @ mean)
    _add_bias(proj, shift)
    cols.zero_()
    torch.testing.assert_close(hooked, last_logits(edited, ids), rtol=1e-5, atol=1e-5)


def test_neuron_ablation_equals_zeroing_its_down_projection_column(model):
    ids = _ids(4)
    with intervene(model, [NeuronAblation(0, 7), NeuronAblation(2, 30, 3.0)]):
        hooked = last_logits(model, ids)
    edited = copy.deepcopy(model)
    _columns(sites_of(edited).layers[0].down_proj, 7, 8).zero_()
    _columns(sites_of(edited).layers[2].down_proj, 30, 31).mul_(3.0)
    torch.testing.assert_close(hooked, last_logits(edited, ids), rtol=1e-5, atol=1e-5)


def test_skipping_every_block_leaves_the_embedding_through_the_head(model):
    ids = _ids(5)
    n = len(sites_of(model).layers)
    skips = [SkipBlock(i, b) for i in range(n) for b in ("attn", "mlp")]
    with intervene(model, skips):
        hooked = last_logits(model, ids)
    edited = copy.deepcopy(model)                       # blocks that write nothing: zero their output layers
    for s in sites_of(edited).layers:
        s.o_proj.weight.data.zero_()
        s.down_proj.weight.data.zero_()
        for proj in (s.o_proj, s.down_proj):
            if getattr(proj, "bias", None) is not None:
                proj.bias.data.zero_()
    torch.testing.assert_close(hooked, last_logits(edited, ids), rtol=1e-5, atol=1e-5)


def test_patching_every_position_of_a_layer_gives_the_clean_run_and_nothing_the_corrupted(model):
    clean, corrupt = _ids(6), _ids(7)
    source = record_activations(model, clean)
    plain_corrupt = last_logits(model, corrupt)
    for layer in (0, len(sites_of(model).layers) - 1):
        with intervene(model, [Patch("resid", layer, p) for p in range(len(clean))], source, len(corrupt)):
            torch.testing.assert_close(last_logits(model, corrupt)[0], source.logits, rtol=1e-5, atol=1e-5)
    with intervene(model, [], source, len(corrupt)):
        torch.testing.assert_close(last_logits(model, corrupt), plain_corrupt, rtol=0, atol=0)


def test_patching_every_head_everywhere_in_the_first_layer_leaves_only_the_mlp_input_different(model):
    """All heads of layer 0 at all positions from the clean run: the attention block then writes
    what it wrote on the clean prompt; with the residual patched too the logits are clean."""
    clean, corrupt = _ids(8), _ids(9)
    source = record_activations(model, clean)
    sites = sites_of(model)
    n_layers = len(sites.layers)
    specs = [Patch("head", layer, p, h) for layer in range(n_layers) for p in range(len(clean))
             for h in range(sites.n_heads)]
    specs += [Patch("resid", 0, p) for p in range(len(clean))]
    with intervene(model, specs, source, len(corrupt)):
        torch.testing.assert_close(last_logits(model, corrupt)[0], source.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("text, message", [
    ("h9.0", "layers 0 to 2"), ("h1.4", "heads 0 to 3"), ("n1.500", "neurons 0 to"),
    ("patch:r1@11", "past the prompt"), ("patch:h0.1@2", "needs the run")])
def test_bad_specs_raise_before_any_hook_and_leave_the_model_untouched(text, message):
    model = tiny_model("llama")
    ids = _ids(10)
    before = last_logits(model, ids)
    source = record_activations(model, _ids(11)) if text.startswith("patch:r") else None
    with pytest.raises(BadIntervention) as err, intervene(model, [HeadAblation(0, 0)] + parse(text), source, len(ids)):
        pytest.fail("the block must not run")
    assert message in str(err.value)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    torch.testing.assert_close(last_logits(model, ids), before, rtol=0, atol=0)


def test_prompts_of_different_lengths_are_refused_in_words():
    model = tiny_model("llama")
    source = record_activations(model, _ids(1, 9))
    with pytest.raises(BadIntervention, match="differ in length"), intervene(model, [Patch("resid", 0, 1)], source, 11):
        pass


def test_hooks_are_removed_when_the_block_raises():
    model = tiny_model("gpt2")
    with pytest.raises(RuntimeError), intervene(model, parse("h0.1,skip:mlp1,n2.3")):
        raise RuntimeError("boom")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_short_and_json_forms_round_trip():
    text = "h14.2,h14.2x0.5,mean:h3.1,n5.120,n5.120x2,skip:attn5,skip:mlp7,patch:r5@3,patch:h5.2@3"
    specs = parse(text)
    assert to_short(specs) == text
    assert from_json(to_json(specs)) == specs
    assert parse("14.2, 20.5") == [HeadAblation(14, 2), HeadAblation(20, 5)]
    for bad in ("h1", "hx.2", "skip:foo3", "<script>", "h1.2x"):
        with pytest.raises(BadIntervention):
            parse(bad)
    with pytest.raises(BadIntervention):
        from_json('[{"kind": "head", "layer": 1}]')
