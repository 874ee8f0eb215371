"""What each module of a causal LM is for, in words: roles found from the anatomy, and teaching text.

Why separate from the graph: the module tree (explorer.analyse.architecture) and the data-flow
diagram (explorer.analyse.data_flow) explain the same parts and must say the same thing.
"""
from __future__ import annotations

from explorer.model.anatomy import Anatomy, LayerParts

ROOT = ""  # node id of the whole model in the architecture graph


LEAF_TEXT = {
    "q_proj": "Query projection: what each token is looking for in earlier tokens.",
    "k_proj": "Key projection: what each token offers to be found by later tokens.",
    "v_proj": "Value projection: the content a token passes on when attended to.",
    "o_proj": "Output projection: mixes the heads' results back into the residual stream.",
    "qkv_proj": "Queries, keys and values computed by one fused matrix.",
    "c_attn": "Queries, keys and values computed by one fused matrix (GPT-2's Conv1D).",
    "gate_proj": "Gate of the gated MLP: decides, feature by feature, how much of up_proj passes.",
    "up_proj": "Expands each token's vector to the wider intermediate size.",
    "down_proj": "Projects the intermediate features back to the hidden size, into the residual stream.",
    "gate_up_proj": "Gate and up projections of the gated MLP, fused into one matrix.",
    "c_fc": "Expands each token's vector to the wider intermediate size (GPT-2's Conv1D).",
    "act_fn": "The MLP's non-linearity (SiLU/GELU); without it the MLP would be one linear map.",
    "act": "The MLP's non-linearity; without it the MLP would be one linear map.",
    "rotary_emb": "Rotary position embedding: rotates queries and keys by position; no learned weights.",
    "q_norm": "Normalizes queries per head before scores are taken.",
    "k_norm": "Normalizes keys per head before scores are taken.",
}
ROLE_TEXT = {
    "embeddings": "Token embedding: one learned vector per vocabulary entry starts the residual stream.",
    "positions": "Learned absolute positions: one vector per position, added to the token vectors.",
    "attention": "Self-attention: each token gathers information from earlier tokens (causal).",
    "mlp": "Feed-forward network applied to each token alone; holds most of the parameters.",
    "lm_head": "LM head: projects the final hidden state onto the vocabulary, one logit per token.",
    "final_norm": "Final norm: rescales the residual stream before the LM head reads it.",
    "layers": "The stack of identical decoder layers; the residual stream passes through them in order.",
    "layer": "One decoder layer: attention then MLP, each adding its result to the residual stream.",
    "root": "The whole causal language model: body plus LM head.",
    "body": "The transformer body: embeddings, decoder layers and final norm, without the LM head.",
}
NORM_TEXT = {
    "pre_attention": "Normalizes the residual stream before attention reads it.",
    "post_attention": "Normalizes attention's output before it is added to the residual stream.",
    "pre_mlp": "Normalizes the residual stream before the MLP reads it.",
    "post_mlp": "Normalizes the MLP's output before it is added to the residual stream.",
    "norm": "Normalizes the residual stream inside the layer.",
}


def norm_placements(layer: LayerParts) -> dict[str, str]:
    """Where each residual-path norm sits (pre/post attention, pre/post MLP).

    Names mislead here: Llama's `post_attention_layernorm` is the norm *before* the MLP, while
    Gemma-2's is applied to attention's output. Count first, then the names that say it outright.
    """
    norms = list(layer.norms)
    if len(norms) == 4:
        return dict(zip(norms, ("pre_attention", "post_attention", "pre_mlp", "post_mlp")))
    if len(norms) == 2:
        return dict(zip(norms, ("pre_attention", "pre_mlp")))
    placed = {}
    for i, name in enumerate(norms):
        leaf = name.rsplit(".", 1)[-1]
        if "pre_feedforward" in leaf or "pre_mlp" in leaf:
            placed[name] = "pre_mlp"
        elif "post_feedforward" in leaf or "post_mlp" in leaf:
            placed[name] = "post_mlp"
        elif i == 0:
            placed[name] = "pre_attention"  # one norm feeding parallel attention and MLP, or the first of three
        else:
            placed[name] = "norm"
    return placed


def module_roles(anatomy: Anatomy) -> tuple[dict[str, str], dict[str, str]]:
    """(role per module that heads a part, teaching key per module) from the anatomy."""
    role: dict[str, str] = {}
    text: dict[str, str] = {ROOT: ROLE_TEXT["root"]}
    if anatomy.embed_tokens:
        role[anatomy.embed_tokens] = "embeddings"
        text[anatomy.embed_tokens] = ROLE_TEXT["embeddings"]
    if anatomy.embed_positions:
        role[anatomy.embed_positions] = "embeddings"
        text[anatomy.embed_positions] = ROLE_TEXT["positions"]
    if anatomy.layers_path:
        text[anatomy.layers_path] = ROLE_TEXT["layers"]
    for layer in anatomy.layers:
        text[layer.name] = ROLE_TEXT["layer"]
        if layer.attention:
            role[layer.attention] = "attention"
            text[layer.attention] = ROLE_TEXT["attention"]
        if layer.mlp:
            role[layer.mlp] = "mlp"
            text[layer.mlp] = ROLE_TEXT["mlp"]
        for name, place in norm_placements(layer).items():
            role[name] = "norms"
            text[name] = NORM_TEXT[place]
    if anatomy.final_norm:
        role[anatomy.final_norm] = "norms"
        text[anatomy.final_norm] = ROLE_TEXT["final_norm"]
    if anatomy.lm_head:
        role[anatomy.lm_head] = "lm_head"
        text[anatomy.lm_head] = ROLE_TEXT["lm_head"]
    return role, text


def generic_text(name: str, cls: str, parent_role: str | None, has_children: bool) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "c_proj":
        return (LEAF_TEXT["o_proj"] if parent_role == "attention"
                else "Projects the intermediate features back to the hidden size, into the residual stream.")
    if leaf in LEAF_TEXT:
        return LEAF_TEXT[leaf]
    low = cls.lower()
    if "dropout" in low or "drop" in leaf:
        return "Dropout: zeroes random activations in training; does nothing at inference."
    if "norm" in low:
        return "Normalization: rescales vectors to a steady size so deep stacks stay trainable."
    if "rotary" in low:
        return LEAF_TEXT["rotary_emb"]
    if "embedding" in low:
        return "Embedding table: one learned vector per index."
    if "linear" in low or "conv1d" in low:
        return "Linear projection: a learned matrix applied to each token's vector."
    if any(w in low for w in ("silu", "gelu", "relu", "activation", "tanh")):
        return "Element-wise non-linearity."
    if "model" in low and name.count(".") == 0 and has_children:
        return ROLE_TEXT["body"]
    return "Container grouping the modules below it." if has_children else "Module without learned weights."


__all__ = ["LEAF_TEXT", "NORM_TEXT", "ROLE_TEXT", "ROOT", "generic_text", "module_roles", "norm_placements"]
