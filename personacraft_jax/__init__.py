"""personacraft-jax: PersonaCraft (occlusion-aware, identity-preserving multi-person SDXL) in JAX / Flax NNX."""

__version__ = "0.1.0"
