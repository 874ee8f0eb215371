

def random_attention_view(n: int, layer: int = 3, head: int = 1, seed: int = 0):
    """A causal (n, n) map with rows summing to 1, at full resolution: what the map figures draw."""
    import numpy as np

    from explorer.views.attention_data import AttentionView
    from explorer.views.pooling import block_spans

    rng = np.random.default_rng(seed)
    z = np.tril(rng.random((n, n), dtype=np.float32))
    z /= z.sum(-1, keepdims=True)
    spans = block_spans(n, 1)
    return AttentionView(layer, head, 0, z, spans, spans, 1, False)
