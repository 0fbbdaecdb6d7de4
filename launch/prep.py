"""Prepare the PersonaCraft scenes dataset (TFDS ArrayRecord) from synthetic or real scenes.

    python -m launch.prep --config=configs/prep_synthetic.py --data_dir=DIR [--config.x=y] [--preview=N]

Writes `DIR/personacraft_scenes/1.0.0/` (shards, TFDS info, `prep_report.json` with written/skipped counts,
skip reasons and face-visibility reasons) and, with `--preview=N`, contact sheets of the first N examples in
`DIR/preview/`. A complete dataset in DIR is reused (delete it to rebuild); an interrupted one is never
mistaken for complete and is rebuilt.
"""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

from data_prep.prep_job import run_prep
from launch import entry

_CONFIG = config_flags.DEFINE_config_file("config", None, "Prep config file (configs/prep_*.py).", lock_config=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Output folder for the TFDS dataset.")
_PREVIEW = flags.DEFINE_integer("preview", 0, "Write contact sheets of the first N examples to DATA_DIR/preview.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or _DATA_DIR.value is None:
        raise app.UsageError("--config and --data_dir are required")
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()  # our own tqdm bar counts scenes
    report = run_prep(_CONFIG.value, _DATA_DIR.value, _PREVIEW.value)
    summary = {
        k: report[k] for k in ("data_dir", "written", "skipped", "skip_reasons", "faces_not_visible") if k in report
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    entry.run(main)
