"""`python -m tests.launch_train_driver ARGS`: launch.train's command line on the in-memory training fixtures.

A stand-in `data_prep.dataset` gives launch.train the fixture examples (`tests.train_fixtures`) for any
`data.data_dir`, so a test runs the real entry point (flags, Trainer, error printing) without a prepared set.
"""

from __future__ import annotations

import sys
import types

import data_prep
from tests import train_fixtures as fx


def use_fixture_data() -> None:
    """Replaces `data_prep.dataset` (before launch.train imports it) by one serving the fixture examples."""
    module = types.ModuleType("data_prep.dataset")
    module.open_split = lambda data_dir, split="train", decode_image=True: [fx.example(i) for i in range(8)]
    module.load_empty_prompt = lambda data_dir: fx.empty_prompt()
    data_prep.dataset = sys.modules["data_prep.dataset"] = module


if __name__ == "__main__":
    use_fixture_data()
    from launch import entry, train

    entry.run(train.main)
