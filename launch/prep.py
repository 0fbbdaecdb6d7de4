"""Prepare the PersonaCraft scenes dataset (TFDS ArrayRecord) from synthetic or real scenes.

    python -m launch.prep --config=configs/prep_synthetic.py --data_dir=DIR [--config.x=y] [--preview=N]
    python -m launch.prep ... --beam_pipeline_options=runner=DirectRunner,direct_num_workers=4,direct_running_mode=multi_processing

Writes `DIR/personacraft_scenes/2.0.0/` (shards, TFDS info, `prep_report.json` with written/skipped counts,
skip reasons, face-visibility and -embedding reasons, people without visible pixels, the fingerprint of the
inputs and config, and the runner) and, with `--preview=N`, contact sheets of the first N examples in
`DIR/preview/`. Without `--beam_pipeline_options` it runs in this process; with them, on the named Beam
runner (TFDS's convention, see `data_prep.beam_prep`), giving the same examples. A complete dataset in DIR
built from the same inputs and config is reused; one built from others is refused (delete it to rebuild);
an interrupted one is never mistaken for complete and is rebuilt.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from launch import entry

_CONFIG = config_flags.DEFINE_config_file("config", None, "Prep config file (configs/prep_*.py).", lock_config=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Output folder for the TFDS dataset (local or FUSE-mounted).")
_PREVIEW = flags.DEFINE_integer("preview", 0, "Write contact sheets of the first N examples to DATA_DIR/preview.")
_BEAM = flags.DEFINE_string(
    "beam_pipeline_options",
    None,
    "Generate with Apache Beam: comma-separated key=value Beam pipeline options naming the runner, e.g. "
    "runner=DirectRunner,direct_num_workers=4,direct_running_mode=multi_processing (this machine) or "
    "runner=DataflowRunner,project=...,region=...,temp_location=... . Default: in this process.",
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or _DATA_DIR.value is None:
        raise app.UsageError("--config and --data_dir are required")
    import tensorflow_datasets as tfds

    from data_prep import captions, dataset, sources
    from data_prep.prep_job import ConfigError, run_prep

    tfds.disable_progress_bar()  # our own tqdm bar counts scenes
    refusals = (
        ConfigError,
        sources.InputError,
        captions.CaptionsError,
        dataset.DatasetMismatchError,
        dataset.DataDirError,
    )
    if _BEAM.value is not None:
        from data_prep.beam_prep import BeamOptionsError

        refusals += (BeamOptionsError,)
    try:
        report = run_prep(_CONFIG.value, _DATA_DIR.value, _PREVIEW.value, beam_pipeline_options=_BEAM.value)
    except refusals as err:
        sys.exit(f"prep: {err}")
    keys = ("data_dir", "reused_existing", "written", "skipped", "skip_reasons", "people_not_visible",
            "faces_not_visible", "face_not_embedded_reasons", "generation")  # fmt: skip
    print(json.dumps({k: report[k] for k in keys if k in report}, indent=2))


if __name__ == "__main__":
    entry.run(main)
