"""personacraft_jax.eval"""
