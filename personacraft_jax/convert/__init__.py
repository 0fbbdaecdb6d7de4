"""Strict two-way weight bridge between Flax NNX models and diffusers / transformers folders."""
