"""The embedded tiny default for `make demo` / `python -m launch.demo`: a miniature PersonaCraft world, on a CPU.

Everything is trained from nothing on synthetic scenes (stand-in SMPL-X bodies, shaded, on gradient
backgrounds): the VAE and the UNet of a small SDXL-architecture base model, then SCNet on the frozen base,
then OBEN with SCNet frozen, then a person reader that measures what the generated images show.
64 x 64 pixels with a 4x VAE: 16 x 16 x 4 latents, a person 6-12 latent pixels tall. Sizes are chosen to
finish in <= 15 minutes on 2 CPU cores from nothing; the trained base is cached in `cache_dir` (keyed by its
config and the code that makes it), so a rerun starts at SCNet.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.out_dir = "demo_out"
    c.cache_dir = "~/.cache/personacraft_jax/demo"
    c.seed = 0
    c.resolution = 64  # pixels
    c.latent_factor = 4  # the demo VAE's downsampling (models.vae.preset('demo'))
    c.batch_size = 16  # every training stage

    c.data = ml_collections.ConfigDict()
    c.data.train_examples = 768
    c.data.heldout_examples = 32
    c.data.min_people = 1
    c.data.max_people = 3
    c.data.camera_distance = (1.5, 2.4)  # metres: close, so people fill most of the frame's height
    c.data.place_anywhere = True  # groups stand anywhere they fit, not always centred

    # Base model, trained from nothing: the VAE on random crops of the training photos (from Flax's initialisers;
    # at learning rate 4e-3 it reconstructs only brightness), then the UNet.
    c.vae = ml_collections.ConfigDict(
        {"steps": 650, "crop_size": 32, "learning_rate": 1e-3, "kl_weight": 1e-3, "warmup_steps": 50}
    )
    c.base = ml_collections.ConfigDict({"steps": 700, "learning_rate": 1e-3, "caption_dropout": 0.1})
    # The PersonaCraft recipe on the frozen base.
    c.scnet = ml_collections.ConfigDict({"steps": 700, "learning_rate": 1e-3})
    c.oben = ml_collections.ConfigDict({"steps": 160, "learning_rate": 1e-3, "lambda_occ": 2.0})

    # The person reader (foreground + boundary) used to measure generated images; validated first (a held-out
    # photo IoU below min_iou is reported as a target not met).
    # photo_fraction: the share of training examples that are photos (the rest are their VAE reconstructions);
    # min_saturation: colour augmentation, each example's saturation scaled by a factor in [this, 1].
    c.reader = ml_collections.ConfigDict({"steps": 500, "batch_size": 16, "learning_rate": 5e-3, "min_iou": 0.9,
                                          "photo_fraction": 0.7, "min_saturation": 0.6})  # fmt: skip

    c.sample = ml_collections.ConfigDict()
    c.sample.steps = 20
    c.sample.seeds = (0, 1, 2)
    c.sample.scenes = 16  # held-out scenes per evaluation batch
    c.sample.guidance = 3.0
    c.sample.oa_scale = 2.0  # OA-CFG "control" weight w_occ
    c.sample.oa_fraction = 0.6
    c.sample.boundary_tolerance = 1  # pixels, for the occlusion-boundary F-score
    c.sample.occlusion_radius = 2  # pixels the occlusion region is dilated by for that score

    # Body-shape control: one held-out single-person scene at beta(gamma) = (1 - gamma) b1 + gamma b2; the
    # stand-in body model's beta 1 is girth.
    c.shape = ml_collections.ConfigDict()
    c.shape.gammas = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)  # the last one extrapolates
    c.shape.beta_index = 1
    c.shape.beta_from = -2.0
    c.shape.beta_to = 2.0
    return c
