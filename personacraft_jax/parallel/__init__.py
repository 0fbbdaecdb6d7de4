"""personacraft_jax.parallel"""
