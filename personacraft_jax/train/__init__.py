"""Training of SCNet / OBEN: loss, train state, the jit-compiled sharded step, checkpoints, the loop."""
