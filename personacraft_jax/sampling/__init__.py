"""personacraft_jax.sampling"""
