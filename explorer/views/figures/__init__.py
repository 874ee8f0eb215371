"""Figure builders: pure functions from arrays or graphs to plotly go.Figure, one module per view."""
