"""The main job on the embedded tiny default: a miniature PersonaCraft world that learns on a CPU.

    python -m launch.demo [--config=configs/demo.py] [--config.out_dir=demo_out]    (or: make demo)

Stages (`run.run_demo`): the world's synthetic scenes through the real prep path (`world`); a base model
trained from nothing, VAE then UNet (`base_model`, cached); SCNet on the frozen base, then OBEN with SCNet
frozen (`training`); a validated person reader and the measurements on generated images (`evaluation`,
`generation`); a held-out scene through launch.sample and launch.evaluate (`user_path`); the report
(`report_page`).
"""
