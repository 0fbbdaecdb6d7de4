"""personacraft_jax.train"""
