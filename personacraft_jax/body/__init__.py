"""personacraft_jax.body"""
