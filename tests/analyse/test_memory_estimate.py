"""Per-precision memory estimates against real loads of tiny models and the embedded model."""
from __future__ import annotations

import pytest
import torch

from explorer.analyse.architecture import model_from_config
from explorer.analyse.inventory import count_parameters, inventory
from explorer.analyse.memory_estimate import (
    GIB,
    GPUS,
    REPORTED,
    estimate_all,
    estimate_memory,
    gpu_fit,
    kv_cache_bytes,
    precision_key,
    quantized_modules,
)
from explorer.model.configs import embedded_config, preset_config
from explorer.model.load_config import DTYPES, bnb_config
from explorer.model.precisions import PRECISIONS
from tests.tiny_models import FAMILIES, tiny_config, tiny_model

TOLERANCE = 0.05  # the bar; the plan is exact on every family here


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory) -> dict[str, str]:
    folders = {}
    for family in FAMILIES:
        folder = tmp_path_factory.mktemp(family)
        tiny_model(family).save_pretrained(folder)
        folders[family] = str(folder)
    return folders


def real_load(folder: str, precision: str):
    from transformers import AutoModelForCausalLM

    spec = PRECISIONS[precision]
    kwargs = {"dtype": spec.rest_dtype}
    if spec.weight_kind:
        kwargs["quantization_config"] = bnb_config(spec.weight_kind, spec.double_quant, "bf16")
    return AutoModelForCausalLM.from_pretrained(folder, **kwargs)


def bnb_state_bytes(model) -> int:
    """Quantization state as bitsandbytes itself serializes it: an independent tally of the plan's state."""
    total = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is not None:
            tensors = state.as_dict(packed=False).values()
            total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
            total += 4 if state.nested else 0  # the nested offset, which as_dict turns into a float
        scb = getattr(weight, "SCB", None)
        if isinstance(scb, torch.Tensor):
            total += scb.numel() * scb.element_size()
    return total


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("precision", ["nf4-dq", "nf4", "fp4", "int8", "bf16", "fp32"])
def test_estimate_matches_the_footprint_of_a_real_load(family, precision, saved_tiny):
    model = real_load(saved_tiny[family], precision)
    estimate = estimate_memory(model_from_config(tiny_config(family)), precision)
    measured = model.get_memory_footprint()
    assert abs(estimate.footprint_bytes / measured - 1) < TOLERANCE
    assert estimate.footprint_bytes == measured  # exact today; the tolerance guards future versions
    allocated = measured + bnb_state_bytes(model)
    assert abs(estimate.allocated_bytes / allocated - 1) < TOLERANCE
    assert estimate.params == count_parameters(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_planned_tensors_are_the_ones_bitsandbytes_quantizes(family, saved_tiny):
    model = real_load(saved_tiny[family], "nf4-dq")
    really = {r.module for r in inventory(model) if r.quant is not None}
    planned = quantized_modules(model_from_config(tiny_config(family)), PRECISIONS["nf4-dq"])
    assert planned == really
    assert model.get_output_embeddings() is not None
    head = next(n for n, m in model.named_modules() if m is model.get_output_embeddings())
    assert head not in planned  # the LM head stays in bf16


def test_llama_31_8b_nf4_double_quant_matches_the_h100_measurement():

    estimate = estimate_memory(model_from_config(preset_config("llama-3.1-8b-instruct")), "nf4-dq")
    assert abs(estimate.footprint_bytes / 5.59e9 - 1) < 0.01  # get_memory_footprint: 5.59 GB
    assert abs(estimate.allocated_bytes / (5.32 * GIB) - 1) < 0.02  # torch allocated: 5.32 GiB
    # the embeddings and the LM head (2 × 128256 × 4096) stay bf16
    assert estimate.params - estimate.quantized_params == 2 * 128256 * 4096 + 65 * 4096


def test_precisions_order_as_their_bits_say():

    est = {e.precision: e for e in estimate_all(model_from_config(preset_config("phi-3-mini-4k-instruct")))}
    assert list(est) == list(REPORTED)
    assert est["nf4-dq"].allocated_bytes < est["nf4"].allocated_bytes
    assert est["nf4"].footprint_bytes == est["fp4"].footprint_bytes
    assert est["nf4"].allocated_bytes < est["int8"].allocated_bytes < est["bf16"].allocated_bytes
    assert est["fp32"].footprint_bytes == 2 * est["bf16"].footprint_bytes - \
        sum(r.bytes for r in inventory(model_from_config(preset_config("phi-3-mini-4k-instruct")))
            if r.kind == "buffer" and r.dtype == "float32")


def test_gpu_fit_says_an_8b_model_needs_4bit_on_a_16gb_card():

    cfg = preset_config("llama-3.1-8b-instruct")
    table = gpu_fit(estimate_all(model_from_config(cfg)), cfg, context_tokens=4096).set_index("precision")
    card16 = next(g.name for g in GPUS if g.memory_gib == 16)
    card80 = next(g.name for g in GPUS if g.memory_gib == 80)
    assert table.loc["NF4 + double quant", card16]
    assert not table.loc["bf16", card16]
    assert table.loc["bf16", card80] and not table.loc["NF4 + double quant", GPUS[0].name]
    assert kv_cache_bytes(cfg, 4096) == 2 * 32 * 8 * 128 * 4096 * 2  # GQA: 8 KV heads of 128


def test_precision_key_follows_the_loader_double_quant_flag():
    assert precision_key("nf4", True) == "nf4-dq"
    assert precision_key("nf4", False) == "nf4"
    assert precision_key("int8", True) == "int8"
    with pytest.raises(KeyError):
        precision_key("int3")


@pytest.mark.slow
@pytest.mark.parametrize("fixture,precision", [("embedded_nf4", "nf4-dq"), ("embedded_bf16", "bf16")])
def test_estimate_matches_the_embedded_model_loaded_for_real(fixture, precision, request):

    loaded = request.getfixturevalue(fixture)
    assert precision_key(loaded.precision, loaded.config.double_quant) == precision
    compute = DTYPES[loaded.compute_dtype] if loaded.compute_dtype else None   # "auto" picks it by device
    estimate = estimate_memory(model_from_config(embedded_config()), precision, compute)
    assert abs(estimate.footprint_bytes / loaded.footprint_bytes - 1) < TOLERANCE
    assert count_parameters(loaded.model) == estimate.params == 134_515_008
