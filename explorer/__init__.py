"""LLM explorer core: load → capture → analyse → figure. No UI code lives here."""
