"""The embedded tiny default for `make demo` / `python -m launch.demo`: everything from nothing, on a CPU.

Synthetic multi-person scenes with the generated stand-in SMPL-X body model, a randomly initialised tiny
SDXL (`data_prep.standin_sdxl`), SCNet then OBEN training, held-out metrics, OA-CFG sampling and export.
Sizes are chosen to finish in about 10 minutes on 2 CPU cores.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.out_dir = "demo_out"
    c.cache_dir = "~/.cache/personacraft_jax/demo"
    c.seed = 0
    c.resolution = 64  # pixels (8 x 8 latents)

    c.data = ml_collections.ConfigDict()
    c.data.train_examples = 128
    c.data.heldout_examples = 24
    c.data.max_people = 3

    c.scnet = ml_collections.ConfigDict({"steps": 200, "learning_rate": 1e-3})
    c.oben = ml_collections.ConfigDict({"steps": 100, "learning_rate": 1e-3, "lambda_occ": 2.0})
    c.batch_size = 8

    c.sample = ml_collections.ConfigDict()
    c.sample.steps = 10
    c.sample.seeds = (0, 1)
    c.sample.guidance = 5.0
    c.sample.oa_scale = 2.0
    c.sample.oa_fraction = 0.5
    c.sample.people = 3
    return c
