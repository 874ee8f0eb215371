"""Sizes that bound the memory of one computation step.

Why one constant: attention recomputation, the logit lens, drift and the views all work through
long prompts in blocks of rows; one bound keeps their peak memory alike and easy to change.
"""
from __future__ import annotations

# float32 elements in one block (e.g. heads × rows × keys, or rows × vocabulary): ~64 MiB.
BLOCK_ELEMENTS = 1 << 24

__all__ = ["BLOCK_ELEMENTS"]
