"""Data-prep throughput: synthetic 3-person scenes with faces (stand-in ONNX face models), end to end.

    .venv/bin/python benchmarks/bench_prep.py --num_examples=8 --size=1024 [--out=benchmarks/results/prep.json]

Runs `data_prep.prep_job.run_prep` twice into temporary folders: a 1-example warm-up (stand-in SMPL-X / face
models generated into the cache, renderer created) and the timed run, then reports examples/s, and the
seconds per example spent in the main stages (posing, shading the photo, rendering the maps, face
embedding; "example total" = everything but the TFDS encoding/writing and setup).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import platform
import tempfile
import time

from configs import prep_synthetic
from data_prep.prep_job import run_prep


def _config(num: int, size: int, people: int, cache_dir: str):
    cfg = prep_synthetic.get_config()
    cfg.num_examples = num
    cfg.width = cfg.height = size
    cfg.min_people = cfg.max_people = people
    cfg.standin_face_models = True
    cfg.cache_dir = cache_dir
    return cfg


@contextlib.contextmanager
def _stage_timers(totals: dict[str, float]):
    """Accumulate wall time spent in the main stages (wrapping their methods for the timed run only)."""
    from data_prep.body_model import BodyModel
    from data_prep.faces import FaceEmbedder
    from data_prep.pipeline import ExampleFactory
    from data_prep.render import SceneRenderer

    targets = {
        "scene (pose)": (BodyModel, "posed"),
        "shade photo": (SceneRenderer, "shade"),
        "render maps": (SceneRenderer, "render"),
        "face embed": (FaceEmbedder, "embed_face"),
        "example total": (ExampleFactory, "__call__"),
    }
    originals = {name: getattr(cls, attr) for name, (cls, attr) in targets.items()}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - start

        return timed

    for name, (cls, attr) in targets.items():
        setattr(cls, attr, wrap(name, originals[name]))
    try:
        yield
    finally:
        for name, (cls, attr) in targets.items():
            setattr(cls, attr, originals[name])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_examples", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--people", type=int, default=3)
    parser.add_argument("--cache_dir", default="~/.cache/personacraft_jax/prep")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        run_prep(_config(1, args.size, args.people, args.cache_dir), pathlib.Path(tmp) / "warmup", progress=False)
        cfg = _config(args.num_examples, args.size, args.people, args.cache_dir)
        totals: dict[str, float] = {}
        with _stage_timers(totals):
            start = time.perf_counter()
            report = run_prep(cfg, pathlib.Path(tmp) / "timed", progress=False)
            seconds = time.perf_counter() - start
        shard_bytes = sum(p.stat().st_size for p in (pathlib.Path(tmp) / "timed").rglob("*array_record*"))
    result = {
        "benchmark": "data prep, synthetic scenes with faces (stand-in ONNX models), end to end",
        "size": f"{args.size}x{args.size}",
        "people_per_scene": args.people,
        "examples": report["written"],
        "faces_embedded": report["faces_visible"],
        "seconds": round(seconds, 2),
        "examples_per_s": round(report["written"] / seconds, 3),
        "bytes_per_example": int(shard_bytes / max(report["written"], 1)),
        "seconds_per_example_by_stage": {k: round(v / max(report["written"], 1), 3) for k, v in totals.items()},
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
    }
    print(json.dumps(result, indent=2))
    if args.out:
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
