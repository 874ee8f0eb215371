"""Plain-language text for the internals views: what each figure shows, how to read it, a guided
tour of one prompt from the embedding to the LM head, and a glossary.

Why data and not page code: the text is reviewed, tested (every view has an explanation, every
tour step formats with a real capture's numbers) and could be translated, without touching the UI.
Tour text quotes the capture through `{placeholders}` filled from Readout.tour_facts(); a number
that a capture cannot give shows as "?" rather than breaking the page.
"""
from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from explorer.views.text import escape_markdown, visible_whitespace


@dataclass(frozen=True)
class Explanation:
    title: str
    shows: str       # what the figure is, one or two sentences
    read: str        # how to read it: what to look at, what patterns mean


EXPLANATIONS: dict[str, Explanation] = {
    # ---- views ----
    "attention": Explanation(
        "Attention",
        "Each layer lets every token gather information from the tokens before it. A head is one "
        "independent way of doing that; this view shows where each head looks.",
        "Pick a layer and a head above, or click a tile or a summary cell to jump to it."),
    "residual": Explanation(
        "Residual stream and norms",
        "Every token carries one vector (the residual stream) through the whole model. Each layer reads "
        "it, normalises it, and adds what its attention and MLP computed.",
        "Watch how big the vectors get layer by layer, how much each block adds, and how the norm "
        "modules rescale them."),
    "embeddings": Explanation(
        "Embeddings",
        "Each token's vector has hundreds of numbers. PCA finds the two directions along which the "
        "tokens differ most and draws every token as a point in that plane.",
        "Points close together are represented similarly. Compare the input embeddings (what each "
        "token is on its own) with a later layer (what it has become in context)."),
    "lens": Explanation(
        "Logit lens",
        "The logit lens applies the model's final norm and LM head to the residual stream after every "
        "layer, as if the model stopped there, and reads off the token it would predict next.",
        "Read a column upwards: early layers often guess generic tokens, later layers converge on the "
        "final answer. The answer usually appears well before the last layer."),
    "attribution": Explanation(
        "Attribution",
        "Which earlier tokens, heads and MLPs carried the information that ends in the chosen token's "
        "prediction: a graph of the routes it took through the layers, and each head's and MLP's direct "
        "push on the predicted token's score.",
        "Follow the thick lines down from the top: they are the routes that mattered. Click an attention "
        "edge to see the heads that carry it, or a node to see what the model would predict there."),
    "tour": Explanation(
        "Guided tour",
        "A walk through one forward pass of this prompt, from tokens to the prediction, one step at a time.",
        "Use Next and Previous; every step shows the figure it talks about, drawn from your capture."),
    "glossary": Explanation(
        "Glossary", "Short definitions of the words these views use.", "Terms are in alphabetical order."),
    # ---- figures ----
    "routes_graph": Explanation(
        "Information-flow routes",
        "Tokens run left to right and layers bottom to top. Each line is a contribution that brought more "
        "than the threshold's share of what its target holds: blue lines come from attention reading an "
        "earlier token, grey lines are the residual stream passing by, orange ones go through an MLP.",
        "Thicker lines carry more. Raise the threshold to keep only the main routes; lower it to see more."),
    "logit_attribution": Explanation(
        "Direct logit attribution",
        "How much each head (one cell per layer and head) and each MLP (right column) added directly to the "
        "predicted token's score, read through the final norm and the LM head; red pushes it up, blue down.",
        "A few bright cells usually carry most of the prediction; click a head to open its attention map."),
    "intervene": Explanation(
        "Interventions",
        "The same prompt run again with the heads you pick turned off (or neurons, or whole blocks), beside the "
        "plain run: the answer's probability, how the top tokens moved, and KL between the two.",
        "A head the answer needs makes its probability drop. Attribution only sees what a head writes "
        "straight into the answer; the difference to the measured change is the indirect effect."),
    "tokens": Explanation(
        "Tokens",
        "The prompt as the model sees it: a sequence of tokens, each a word, a piece of a word or a "
        "symbol. ␣ marks a leading space and ↵ a new line.",
        "Click a token (or use the token slider) to focus the views on it."),
    "attention_map": Explanation(
        "One head's attention",
        "Row i is a query token, column j a key token; the colour is how much of token i's attention goes "
        "to token j. Every row sums to 1, and a token can only look back (the upper triangle is empty).",
        "A bright diagonal means 'look at myself', a line just below it 'look at the previous token', a "
        "bright first column 'park attention on the first token' (an attention sink)."),
    "attention_overview": Explanation(
        "All layers × heads",
        "Every head's attention map, shrunk to a small tile: one row of tiles per layer, one column per "
        "head, heads that share a KV head grouped together.",
        "Scan for families of patterns: diagonals, first-column sinks, stripes. Click a tile to open it."),
    "head_summaries": Explanation(
        "Head summaries",
        "Three numbers per head, averaged over query tokens (or at the focused token): entropy (how "
        "spread out the attention is), first-token share (how much goes to token 0) and look-back "
        "distance (how far back, in tokens, it looks on average).",
        "Low entropy = a sharp head that picks one token. Look-back near 1 = a previous-token head. A "
        "first-token share near 1 = the head is mostly idle (resting on the sink). Click a cell to open the head."),
    "gqa": Explanation(
        "Grouped-query attention",
        "With grouped-query attention (GQA) several query heads share one key/value head, which saves "
        "memory. Lines join each query head to the KV head it reads.",
        "Heads in one group see the same keys and values but ask different questions (queries), so "
        "their maps can still differ."),
    "token_attention": Explanation(
        "Attention from the focused token",
        "Where the focused token looks in every layer: one row per layer, one column per earlier token "
        "(averaged over the layer's heads, or for the chosen head).",
        "Follow a column upwards to see which earlier tokens matter to this one, and in which layers."),
    "residual_norms": Explanation(
        "Residual norm",
        "The length (L2 norm) of each token's residual vector entering layer 0 and after every layer.",
        "Norms usually grow with depth. A token whose norm is far larger than the rest (often the "
        "first) is a 'massive activation' that many heads use as a sink."),
    "norm_stats": Explanation(
        "Norm modules",
        "Each norm module (RMSNorm or LayerNorm) rescales a token's vector before attention or the MLP. "
        "Input RMS is how big the vector arrives; output mean and std describe what leaves; the gain is "
        "the learned per-channel scale.",
        "Input RMS grows with depth while the output stays near a fixed scale set by the gain: the norm "
        "keeps each block's input well-behaved whatever the stream's size."),
    "norm_gain": Explanation(
        "Learned gains",
        "Every norm module's learned scale, one row per module and one column per channel of the hidden vector.",
        "Channels with unusually large or small gain stand out as vertical stripes; they are often the "
        "same channels across layers."),
    "contributions": Explanation(
        "Attention and MLP contributions",
        "How large the vector that each layer's attention block and MLP block add to the stream is "
        "(mean over tokens, and at the focused token).",
        "Compare the two curves: layers where the MLP writes much more than attention do most of their "
        "work per token; spikes often sit in the first and last layers."),
    "pca": Explanation(
        "PCA projection",
        "Each point is a token, placed by its first two principal components; the colour is its position "
        "in the prompt. The axis titles say how much of the variance each component explains.",
        "Input embeddings cluster by token identity; later layers mix in context and position. Leave out "
        "the first token if it sits far away from everything else."),
    "lens_map": Explanation(
        "Logit lens",
        "Each cell is the top next-token guess after that layer (rows) at that position (columns), with "
        "its probability as the colour.",
        "The last row is the model's real prediction. Look for the layer where a column settles."),
    "trajectory": Explanation(
        "Final prediction across layers",
        "The token the model finally predicts at the focused position, tracked through the layers: its "
        "probability and its rank (0 = top guess) if the model stopped after each layer.",
        "A rank that falls to 0 early means the answer was decided early; a late jump means the last "
        "layers made the decision."),
}


@dataclass(frozen=True)
class TourStep:
    key: str
    title: str
    body: str        # str.format template over Readout.tour_facts()
    figure: str      # which figure the page draws for this step


TOUR: tuple[TourStep, ...] = (
    TourStep("tokens", "1 · Tokens",
             "The model never sees letters. The tokenizer cut your prompt into **{n_tokens} tokens**, from "
             "“{first_token}” to “{last_token}”, and each became a number (its id).", "tokens"),
    TourStep("embeddings", "2 · Embeddings",
             "Each id picks a row of the embedding table: a vector of **{hidden} numbers**. That vector is "
             "all the model knows about the token so far. The picture squeezes those vectors into two "
             "dimensions with PCA.", "pca_embeddings"),
    TourStep("stream", "3 · The residual stream",
             "The vectors now flow through **{n_layers} layers**. No layer replaces a vector: each adds to "
             "it, so the stream keeps a running sum. Its typical length grows from **{norm_start:.1f}** to "
             "**{norm_end:.1f}** (×{norm_growth:.1f}).", "residual_norms"),
    TourStep("norms", "4 · Normalisation",
             "Before reading the stream, every block normalises it (this model has **{n_norms} norm "
             "modules**), so attention and the MLP always receive vectors of a steady size, then rescale "
             "them channel by channel with a learned gain.", "norm_stats"),
    TourStep("attention", "5 · Attention",
             "Attention lets each token gather information from earlier tokens. Each layer has "
             "**{n_heads} heads**, sharing **{n_kv_heads} key/value heads** ({group_size} query heads per "
             "group). Here is a sharp head, layer {local_layer} head {local_head}: on average it looks "
             "**{local_lookback:.1f} tokens back**.", "attention_local"),
    TourStep("sinks", "6 · Attention sinks",
             "Many heads have nothing useful to read for most tokens, so they park their attention on the "
             "first token: layer {sink_layer} head {sink_head} puts **{sink_share:.0%}** of it there. The "
             "summary heatmaps show this for every head at once.", "head_summaries"),
    TourStep("mlp", "7 · Attention and MLP write to the stream",
             "After attention, each layer's MLP works on every token separately. The curves show how much "
             "each block adds; attention writes most in layer {attn_peak_layer}, the MLP in layer "
             "{mlp_peak_layer}.", "contributions"),
    TourStep("context", "8 · Vectors in context",
             "After the last layer the same tokens sit in a different arrangement: each vector now carries "
             "what the token means here, and what should come next.", "pca_last"),
    TourStep("lens", "9 · Reading the stream early",
             "The logit lens applies the LM head after every layer. Watching a column, you can see the "
             "guess for the next token form, layer by layer.", "lens"),
    TourStep("head", "10 · The LM head",
             "Finally the LM head turns the last token's vector into a score for every token in the "
             "vocabulary. The model predicts **“{prediction}”** with probability **{prediction_prob:.0%}**; "
             "it became the top guess for good at layer **{settle_layer}**.", "trajectory"),
    TourStep("routes", "11 · Where the answer came from",
             "Each head and MLP adds a vector to the stream, so the final score of **“{prediction}”** splits "
             "into their shares. The heatmap shows each one's direct push; the Attribution view also draws "
             "the routes the information took from the earlier tokens.", "attribution"),
    TourStep("intervene", "12 · Which heads does this answer need?",
             "Attribution is correlation: a head can write towards **“{prediction}”** and still not be needed. "
             "Open the **Intervene** view: it starts with the heads ranked first here turned off. If the "
             "probability of “{prediction}” falls, the answer needs them.", "attribution"),
)


GLOSSARY: dict[str, str] = {
    "Direct logit attribution": "Each head's and MLP's output, read through the final norm and the LM head, "
                                "gives its own share of a token's score; the shares add up to the score.",
    "Information-flow routes": "The contributions that mattered for one prediction, as a graph over "
                               "tokens and layers (Ferrando & Voita, 2024).",
    "Attention head": "One independent attention mechanism inside a layer, with its own queries, keys "
                      "and values. A layer runs several in parallel.",
    "Attention sink": "A token (usually the first) that receives a large share of attention without "
                      "contributing much; heads use it as a place to rest.",
    "Decoder layer": "One block of the model: a norm, self-attention, a norm and an MLP, each adding its "
                     "output back to the residual stream.",
    "Embedding": "The vector a token id is turned into before the first layer, looked up in a learned table.",
    "Entropy": "How spread out a probability distribution is, in nats: 0 when all mass is on one item, "
               "log(n) when it is even over n items.",
    "Gain": "The learned per-channel scale of a norm module (its weight).",
    "GQA (grouped-query attention)": "Several query heads share one key/value head, which shrinks the KV cache.",
    "Hidden state": "A token's residual-stream vector at some point in the model.",
    "KV head": "A key/value head; under GQA several query heads read the same one.",
    "LM head": "The final linear layer that turns a hidden state into one score (logit) per vocabulary token.",
    "Logit": "An unnormalised score; softmax turns a vector of logits into probabilities.",
    "Logit lens": "Applying the final norm and LM head to an intermediate layer's hidden state to see what "
                  "the model would predict if it stopped there.",
    "Look-back distance": "How many tokens back a head looks, averaged with its attention weights.",
    "MLP": "The per-token feed-forward block of a layer; it transforms each token's vector on its own.",
    "Norm (RMSNorm, LayerNorm)": "Rescales a vector to a standard size (RMSNorm divides by its root mean "
                                 "square), then multiplies by a learned gain.",
    "PCA": "Principal component analysis: finds the directions along which points vary most, to draw "
           "high-dimensional vectors in 2-D.",
    "Position": "A token's index in the sequence, counting from 0.",
    "Query, key, value": "Attention compares a token's query with earlier tokens' keys to decide where to "
                         "look, then takes a weighted sum of their values.",
    "Rank": "A token's place in the sorted predictions: 0 is the top guess.",
    "Residual stream": "The running vector each token carries through the model; every block adds to it.",
    "RMS": "Root mean square: the square root of the mean of the squared entries, a vector's typical size.",
    "Softmax": "Turns scores into probabilities that are positive and sum to 1.",
    "Token": "A unit of text the model reads and writes: a word, part of a word, or a symbol.",
}


class _Missing:
    """A fact the capture could not provide: prints as "?" under any format spec."""

    def __format__(self, spec: str) -> str:
        return "?"


class _FactFormatter(string.Formatter):
    def get_value(self, key, args, kwargs):
        value = kwargs.get(key) if isinstance(key, str) else None
        return _Missing() if value is None else value

    def format_field(self, value: Any, format_spec: str) -> str:
        try:
            return super().format_field(value, format_spec)
        except (TypeError, ValueError):
            return str(value)


def render(template: str, facts: Mapping[str, Any]) -> str:
    """Fill a tour template (Markdown); unknown facts become "?".

    String facts are token text from the prompt, i.e. untrusted: their whitespace is made visible
    and every ASCII punctuation mark is backslash-escaped, so a token like `**`, `[x](javascript:…)`
    or `:red[...]` shows as typed instead of becoming Markdown.
    """
    shown = {k: escape_markdown(visible_whitespace(v)) if isinstance(v, str) else v for k, v in facts.items()}
    return _FactFormatter().vformat(template, (), shown)


__all__ = ["EXPLANATIONS", "Explanation", "GLOSSARY", "TOUR", "TourStep", "escape_markdown", "render",
           "visible_whitespace"]
