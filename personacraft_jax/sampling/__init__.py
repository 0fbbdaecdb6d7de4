"""Sampling: diffusion schedulers (Euler discrete, DDIM, DPM-Solver++ 2M) and (occlusion-aware) CFG.

`schedulers` precomputes a static-length schedule on the host and exposes pure-jnp step functions usable
inside one jit-compiled denoising loop; `guidance` batches the CFG branches and combines their outputs.
"""
