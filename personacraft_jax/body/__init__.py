"""personacraft_jax.body: body-shape control on SMPL-X betas (pure numpy, see shape_control)."""
