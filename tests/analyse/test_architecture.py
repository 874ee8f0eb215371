"""Module graph, counts, bytes, roles and data flow, on tiny random models of every family."""
from __future__ import annotations

import math

import networkx as nx
import pytest
import torch

from explorer.analyse.architecture import (
    ROOT,
    ArchitectureError,
    build_graph,
    describe_config,
    describe_model,
    model_from_config,
    module_table,
    parameter_breakdown,
)
from explorer.analyse.data_flow import data_flow
from explorer.analyse.inventory import count_parameters, inventory
from explorer.analyse.module_roles import norm_placements
from explorer.model.configs import preset_config
from explorer.model.load_config import bnb_config
from tests.tiny_models import FAMILIES, tiny_config, tiny_model


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory) -> dict[str, str]:
    """Each family saved once, so quantized loads can be made from a real checkpoint."""
    folders = {}
    for family in FAMILIES:
        folder = tmp_path_factory.mktemp(family)
        tiny_model(family).save_pretrained(folder)
        folders[family] = str(folder)
    return folders


def load_nf4(folder: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=bnb_config("nf4", True, "bf16"),
                                                dtype=torch.bfloat16)


@pytest.mark.parametrize("family", FAMILIES)
def test_graph_counts_equal_the_sum_of_real_parameters(family):
    model = tiny_model(family)
    g = build_graph(model)
    assert nx.is_tree(g)
    assert g.nodes[ROOT]["params"] == sum(p.numel() for p in model.parameters())
    first_owner = {}  # a tied tensor belongs to the module where it first appears
    for name, p in model.named_parameters():
        first_owner[id(p)] = name
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        expected = sum(p.numel() for p in module.parameters() if first_owner[id(p)].startswith(prefix))
        assert g.nodes[name]["params"] == expected, name


@pytest.mark.parametrize("family", FAMILIES)
def test_nf4_counts_equal_the_unquantized_model(family, saved_tiny):
    model = tiny_model(family)
    quantized = load_nf4(saved_tiny[family])
    packed = sum(p.numel() for p in quantized.parameters())
    expected = sum(p.numel() for p in model.parameters())
    assert packed < expected, "a plain numel would undercount 4-bit weights"
    assert count_parameters(quantized) == expected
    g = build_graph(quantized)
    assert g.nodes[ROOT]["params"] == expected
    # and per module: the quantized tree has the unquantized tree's counts
    g_ref = build_graph(model)
    assert {n: g.nodes[n]["params"] for n in g} == {n: g_ref.nodes[n]["params"] for n in g_ref}


def test_nodes_carry_shape_dtype_quant_state_device_and_bytes(saved_tiny):
    quantized = load_nf4(saved_tiny["llama"])
    g = build_graph(quantized)
    q = g.nodes["model.layers.0.self_attn.q_proj"]
    assert q["shapes"] == {"weight": (64, 64)}  # the original shape, not the packed (2048, 1)
    assert q["dtypes"] == ["uint8"]
    assert q["quant"] == "nf4 · block 64 · double quant"
    assert q["device"] == "cpu"
    state = quantized.model.layers[0].self_attn.q_proj.weight.quant_state
    nested = state.absmax.numel() + state.code.numel() * 4 + 4 + state.state2.absmax.numel() * 4 + \
        state.state2.code.numel() * 4
    assert q["bytes"] == 64 * 64 // 2 + nested
    head = g.nodes["lm_head"]
    assert head["quant"] == "" and head["dtypes"] == ["bfloat16"]  # transformers keeps the head unquantized
    assert g.nodes["model.norm"]["explain"].startswith("Final norm")


def test_root_bytes_are_the_footprint_plus_quantization_state(saved_tiny):
    quantized = load_nf4(saved_tiny["gemma2"])
    records = inventory(quantized)
    g = build_graph(quantized, records)
    state = sum(r.state_bytes for r in records)
    assert state > 0
    assert g.nodes[ROOT]["bytes"] == quantized.get_memory_footprint() + state


def test_tied_weights_are_counted_once_and_marked():
    model = tiny_model("gemma2")  # Gemma-2 ties the head to the embedding
    assert model.lm_head.weight is model.model.embed_tokens.weight
    view = describe_model(model, "tiny gemma2")
    assert view.total_params == sum(p.numel() for p in model.parameters())
    assert view.tied == {"model.embed_tokens.weight": ("lm_head.weight",)}
    head = view.graph.nodes["lm_head"]
    assert head["params"] == 0 and head["tied"] == ["weight = model.embed_tokens.weight"]
    assert head["tied_params"] == model.lm_head.weight.numel()
    rows = {r.role: r for r in view.breakdown}
    assert rows["lm_head"].params == 0 and "tied" in rows["lm_head"].note


@pytest.mark.parametrize("family", FAMILIES)
def test_breakdown_puts_every_parameter_in_exactly_one_part(family):
    model = tiny_model(family)
    g = build_graph(model)
    rows = {r.role: r.params for r in parameter_breakdown(g)}
    assert sum(rows.values()) == count_parameters(model)
    assert rows["attention"] > 0 and rows["mlp"] > 0 and rows["norms"] > 0 and rows["embeddings"] > 0
    assert rows.get("other", 0) == 0, "every parameter of these families belongs to a known part"


def test_breakdown_matches_hand_counts_for_llama():
    cfg = tiny_config("llama")
    h, i, v, n, kv = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers, \
        cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    rows = {r.role: r.params for r in describe_model(tiny_model("llama"), "x").breakdown}
    assert rows == {"embeddings": v * h, "attention": n * (2 * h * h + 2 * h * kv), "mlp": n * 3 * h * i,
                    "norms": (2 * n + 1) * h, "lm_head": v * h}


@pytest.mark.parametrize("family", FAMILIES)
def test_meta_build_matches_the_real_model_without_memory(family):
    meta = model_from_config(tiny_config(family))
    assert all(p.device.type == "meta" for p in meta.parameters())
    assert count_parameters(meta) == count_parameters(tiny_model(family))
    assert sorted(build_graph(meta).nodes) == sorted(build_graph(tiny_model(family)).nodes)


def test_module_table_has_one_row_per_module_and_filterable_columns():
    model = tiny_model("phi3")
    table = module_table(build_graph(model))
    assert len(table) == len(list(model.named_modules()))
    assert {"module", "class", "params", "bytes", "shapes", "dtype", "quant", "device", "what it does"} <= set(table)
    assert table.loc[table["module"] == "model.layers.0.self_attn.qkv_proj", "shapes"].item() == "weight 128×64"
    assert table["what it does"].str.len().min() > 10, "every module carries an explanation"


def test_norm_placement_follows_gemma2_and_llama_semantics():
    gemma = describe_model(tiny_model("gemma2"), "g").anatomy.layers[0]
    assert list(norm_placements(gemma).values()) == ["pre_attention", "post_attention", "pre_mlp", "post_mlp"]
    llama = describe_model(tiny_model("llama"), "l").anatomy.layers[0]
    # Llama's "post_attention_layernorm" sits before the MLP
    assert norm_placements(llama) == {"model.layers.0.input_layernorm": "pre_attention",
                                      "model.layers.0.post_attention_layernorm": "pre_mlp"}


def test_data_flow_unfolds_one_layer_and_folds_the_rest():
    anatomy = describe_model(tiny_model("llama"), "l").anatomy
    flow = data_flow(anatomy, expanded=1)
    kinds = [n.kind for n in flow.nodes]
    assert kinds == ["embed", "folded", "stream", "norm", "attention", "add", "norm", "mlp", "add", "folded",
                     "norm", "head"]
    assert [n.span for n in flow.nodes if n.kind == "folded"] == [(0, 0), (2, 2)]
    assert all(n.explain for n in flow.nodes)
    # the residual stream bypasses each branch: the layer input feeds the first add directly
    assert ("L1:in", "L1:add1", "stream") in flow.edges
    xs = [n.x for n in flow.nodes if n.y == 0]
    assert xs == sorted(xs)


def test_data_flow_draws_gemma2_post_norms_and_gpt2_positions():
    gemma = data_flow(describe_model(tiny_model("gemma2"), "g").anatomy, 0)
    assert [n.kind for n in gemma.nodes].count("norm") == 5  # 4 in the layer + final
    gpt2 = data_flow(describe_model(tiny_model("gpt2"), "g").anatomy, 0)
    assert {"positions"} <= {n.kind for n in gpt2.nodes}
    assert next(n.module for n in gpt2.nodes if n.kind == "positions") == "transformer.wpe"


def test_data_flow_stays_the_same_size_for_many_layers():
    from transformers import LlamaConfig

    sizes = []
    for layers in (4, 32, 80):
        cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=layers,
                          num_attention_heads=4, num_key_value_heads=2)
        flow = data_flow(describe_model(model_from_config(cfg), "x").anatomy, expanded=2)
        sizes.append(len(flow.nodes))
        assert flow.nodes[-3].span == (3, layers - 1)
    assert len(set(sizes)) == 1
    folded = data_flow(describe_model(model_from_config(cfg), "x").anatomy, expanded=None)
    assert [n.kind for n in folded.nodes] == ["embed", "folded", "norm", "head"]


def test_describe_config_plans_bytes_for_the_chosen_precision():
    cfg = tiny_config("llama")
    nf4 = describe_config(cfg, "tiny", "nf4-dq")
    fp32 = describe_config(cfg, "tiny", "fp32")
    assert nf4.meta and nf4.total_params == fp32.total_params == count_parameters(tiny_model("llama"))
    assert fp32.total_bytes == tiny_model("llama").get_memory_footprint()
    assert nf4.total_bytes < fp32.total_bytes / 3
    assert nf4.graph.nodes["model.layers.0.mlp.up_proj"]["quant"] == "nf4 · block 64 · double quant"


def test_a_non_causal_config_is_refused_with_a_clear_message():
    from transformers import ViTConfig

    with pytest.raises(ArchitectureError, match="not a causal language model"):
        model_from_config(ViTConfig())


def test_llama_8b_tree_builds_from_config_in_under_a_second():
    import time


    cfg = preset_config("llama-3.1-8b-instruct")
    describe_config(cfg, "warm-up")
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        view = describe_config(cfg, "llama")
        best = min(best, time.perf_counter() - start)
    assert view.total_params == 8_030_261_248
    assert best < 1.0, f"{best:.2f} s"
