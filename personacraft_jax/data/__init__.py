"""personacraft_jax.data"""
