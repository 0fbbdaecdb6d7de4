"""Flax NNX models whose parameter paths mirror the diffusers / transformers state-dict names."""
