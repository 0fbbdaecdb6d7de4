"""Data-prep throughput per CPU core, end to end through `data_prep.prep_job.run_prep`.

    .venv/bin/python -m benchmarks.bench_prep [--baseline=DIR] [--repeats=3] [--num_examples=16] \
        [--size=1024] [--people=3] [--synthetic_examples=64] [--core=0] [--out=results.json]

Two workloads:
- real: `configs/prep_real.py` on image + fit folders that this script writes once (synthetic 3-person
  scenes: the shaded photo as a JPEG, its fit as .npz, a captions file), at ``--size`` x ``--size`` (the
  config's resolution) with the SMPL-X-format stand-in as `smplx_model_root` and stand-in face models. All
  DESIGN section 4 maps, ArcFace embeddings of the visible faces, no SDXL encodings.
- synthetic: `configs/prep_synthetic.py` at 64 x 64 with 2-3 people, no face models, no SDXL encodings (the
  demo's data prep without its tiny SDXL encoders).

Per core: every timed run is a fresh worker process pinned to CPU ``--core`` (`os.sched_setaffinity`, so
all its threads share that core) with torch, OpenCV, OpenMP and llvmpipe set to one thread; each worker
first prepares one example untimed (models loaded, renderer created, stand-ins cached). ``--baseline=DIR``
runs the same worker on another checkout (e.g. ``git archive main | tar -x -C DIR``) alternately with this
one (baseline, this, baseline, ...); the figures are medians over ``--repeats``.

Reported per run: examples per CPU-second of the worker over the whole `run_prep` call (set-up included)
and after set-up (from the first example on): the per-core throughput, which other processes sharing the
core barely change; examples per wall second (the same figure only on an otherwise idle core); bytes per
example; and, per example, the CPU (and wall) seconds inside the stages: the SMPL-X forward
(`BodyModel.canonical`), `SceneRenderer.render` and `.shade`, `FaceEmbedder.embed_face`, reading the photo,
reading the fit, cropping the photo, and `ExampleFactory.__call__` in all; "encode + write, rest" = the
time after set-up outside `ExampleFactory.__call__` (TFDS feature encoding, ArrayRecord writing, the source
iterator, closing the renderer).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

REPO = pathlib.Path(__file__).resolve().parent.parent
SYNTHETIC_SIZE = 64
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LP_NUM_THREADS": "0"}


# -- the data folders (written once, by this checkout) ----------------------------------------------------
def write_real_folders(root: pathlib.Path, num: int, size: int, people: int, seed: int) -> None:
    """`root/{images,fits}/<id>`, `root/captions.jsonl` and the stand-in model in `root/smplx_root`."""
    import numpy as np
    from PIL import Image

    from data_prep.body_model import BodyModel, write_standin_smplx_model
    from data_prep.fits import save_scene_fit
    from data_prep.render import SceneRenderer
    from data_prep.scenes import posed_synthetic_scene, shade_scene

    (root / "images").mkdir(parents=True)
    (root / "fits").mkdir()
    body = BodyModel(write_standin_smplx_model(root / "smplx_root").parent.parent)
    lines = []
    with SceneRenderer(size, size) as renderer:
        for index in range(num):
            rng = np.random.default_rng([seed, index])
            fit, caption, posed = posed_synthetic_scene(rng, body, size, size, people, people)
            photo = shade_scene(renderer, [(verts, body.faces) for verts, _ in posed], fit.K, rng)
            Image.fromarray(photo).save(root / "images" / f"{index:05d}.jpg", quality=95)
            save_scene_fit(root / "fits" / f"{index:05d}.npz", fit)
            lines.append(json.dumps({"image": f"{index:05d}.jpg", "caption": caption}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")


# -- the worker (one timed run, pinned to one core) ------------------------------------------------------
def _config(workload: str, data: pathlib.Path, num: int, size: int):
    if workload == "real":
        from configs import prep_real

        cfg = prep_real.get_config()
        cfg.image_dir, cfg.fits_dir = str(data / "images"), str(data / "fits")
        cfg.captions_jsonl, cfg.smplx_model_root = str(data / "captions.jsonl"), str(data / "smplx_root")
        cfg.resolution = size
        cfg.standin_face_models = True
    else:
        from configs import prep_synthetic

        cfg = prep_synthetic.get_config()
        cfg.num_examples, cfg.width, cfg.height = num, SYNTHETIC_SIZE, SYNTHETIC_SIZE
        cfg.min_people, cfg.max_people = 2, 3
    cfg.cache_dir = str(data.parent / "cache")
    return cfg


@contextlib.contextmanager
def _stage_timers(totals: dict[str, list[float]], first_example: list[float]) -> Iterator[None]:
    """Accumulate [wall, CPU] seconds spent inside the stages' functions (wrapped for the timed run only).

    `first_example` gets the (wall, CPU) clock readings at the start of the first example."""
    from data_prep import sources
    from data_prep.body_model import BodyModel
    from data_prep.faces import FaceEmbedder
    from data_prep.pipeline import ExampleFactory
    from data_prep.render import SceneRenderer

    targets = {
        "pose (SMPL-X forward)": (BodyModel, "canonical"),
        "render maps": (SceneRenderer, "render"),
        "shade photo": (SceneRenderer, "shade"),
        "face embed": (FaceEmbedder, "embed_face"),
        "read photo": (sources, "decode_image_file"),
        "read fit": (sources, "load_fit"),
        "crop photo": (sources, "crop_scene"),
        "example total": (ExampleFactory, "__call__"),
    }
    originals = {name: getattr(owner, attr) for name, (owner, attr) in targets.items()}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            start = _clocks()
            if name == "example total" and not first_example:
                first_example.extend(start)
            try:
                return fn(*args, **kwargs)
            finally:
                spent = [now - then for now, then in zip(_clocks(), start)]
                totals[name] = [a + b for a, b in zip(totals.get(name, [0.0, 0.0]), spent)]

        return timed

    for name, (owner, attr) in targets.items():
        setattr(owner, attr, wrap(name, originals[name]))
    try:
        yield
    finally:
        for name, (owner, attr) in targets.items():
            setattr(owner, attr, originals[name])


def _clocks() -> tuple[float, float]:
    """(wall, CPU of the whole process) seconds: with every thread on one core, a stage's CPU seconds are
    its own work, whatever else runs on that core."""
    return time.perf_counter(), time.process_time()


def run_worker(workload: str, data: pathlib.Path, warmup: pathlib.Path, num: int, size: int) -> dict:
    """One untimed 1-example run, then the timed run; returns its figures."""
    import cv2
    import tensorflow_datasets as tfds
    import torch

    import data_prep
    from data_prep.prep_job import run_prep

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    tfds.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        run_prep(_config(workload, warmup, 1, size), pathlib.Path(tmp) / "warmup", progress=False)
        totals: dict[str, list[float]] = {}
        first_example: list[float] = []
        with _stage_timers(totals, first_example):
            start = _clocks()
            report = run_prep(_config(workload, data, num, size), pathlib.Path(tmp) / "timed", progress=False)
            end = _clocks()
        shard_bytes = sum(p.stat().st_size for p in (pathlib.Path(tmp) / "timed").rglob("*array_record*"))
    written = report["written"]
    run, after_setup = [e - s for e, s in zip(end, start)], [e - f for e, f in zip(end, first_example)]
    rest = [a - t for a, t in zip(after_setup, totals["example total"])]
    stages = {**totals, "encode + write, rest": rest}
    return {
        "code": str(pathlib.Path(data_prep.__file__).resolve().parent.parent),
        "examples": written,
        "faces_embedded": report["faces_visible"],
        "examples_per_s": written / run[0],
        "examples_per_cpu_s": written / run[1],
        "examples_per_cpu_s_after_setup": written / after_setup[1],
        "setup_cpu_s": run[1] - after_setup[1],
        "bytes_per_example": shard_bytes / written,
        "cpu_seconds_per_example": {name: cpu / written for name, (_, cpu) in stages.items()},
        "wall_seconds_per_example": {name: wall / written for name, (wall, _) in stages.items()},
    }


# -- the driver ------------------------------------------------------------------------------------------
def _run_in(code: pathlib.Path, args: argparse.Namespace, workload: str, data: pathlib.Path) -> dict:
    """Run the worker in a fresh process that imports the project from `code`, pinned to one core."""
    env = {**os.environ, **ONE_THREAD_ENV, "PYTHONPATH": str(code), "PYOPENGL_PLATFORM": "egl"}
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", workload, "--data", str(data)]
    command += ["--num_examples", str(args.num_examples if workload == "real" else args.synthetic_examples)]
    command += ["--size", str(args.size), "--core", str(args.core)]
    done = subprocess.run(command, env=env, cwd=code, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker on {code} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if pathlib.Path(result["code"]) != code.resolve():
        raise RuntimeError(f"the worker for {code} imported the project from {result['code']}")
    return result


def _medians(runs: list[dict]) -> dict:
    scalar = ("examples_per_s", "examples_per_cpu_s", "examples_per_cpu_s_after_setup", "setup_cpu_s")
    out = {key: round(statistics.median(r[key] for r in runs), 3) for key in scalar}
    out["bytes_per_example"] = int(statistics.median(r["bytes_per_example"] for r in runs))
    for table in ("cpu_seconds_per_example", "wall_seconds_per_example"):
        names = runs[0][table]
        out[table] = {name: round(statistics.median(r[table].get(name, 0.0) for r in runs), 4) for name in names}
    out["examples"], out["faces_embedded"], out["repeats"] = runs[0]["examples"], runs[0]["faces_embedded"], len(runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=pathlib.Path, default=None, help="another checkout to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num_examples", type=int, default=16, help="real-data examples per timed run")
    parser.add_argument("--synthetic_examples", type=int, default=64, help="64 x 64 synthetic examples per run")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--people", type=int, default=3)
    parser.add_argument("--core", type=int, default=0, help="the CPU every worker is pinned to")
    parser.add_argument("--workloads", default="real,synthetic")
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=pathlib.Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        os.sched_setaffinity(0, {args.core})
        data = args.data / args.worker
        result = run_worker(args.worker, data, args.data / f"{args.worker}_warmup", args.num_examples, args.size)
        print(json.dumps(result))
        return

    codes = {"this": REPO} if args.baseline is None else {"baseline": args.baseline.resolve(), "this": REPO}
    workloads = args.workloads.split(",")
    runs: dict[str, dict[str, list[dict]]] = {w: {name: [] for name in codes} for w in workloads}
    with tempfile.TemporaryDirectory(prefix="bench_prep_") as tmp:
        data = pathlib.Path(tmp) / "data"
        if "real" in workloads:
            write_real_folders(data / "real", args.num_examples, args.size, args.people, seed=0)
            write_real_folders(data / "real_warmup", 1, args.size, args.people, seed=1)
        for workload in workloads:
            (data / workload).mkdir(parents=True, exist_ok=True)
            (data / f"{workload}_warmup").mkdir(parents=True, exist_ok=True)
        for repeat in range(args.repeats):
            for workload in workloads:
                for name, code in codes.items():
                    result = _run_in(code, args, workload, data)
                    runs[workload][name].append(result)
                    rates = f"{result['examples_per_cpu_s']:.3f} ex/CPU-s, {result['examples_per_s']:.3f} ex/s wall"
                    print(f"repeat {repeat} {workload:9s} {name:8s} {rates}", flush=True)
    summary = {
        "benchmark": "data prep per core (run_prep end to end, one pinned core, one thread per library)",
        "real": f"{args.size}x{args.size} JPEG photos, {args.people} people, stand-in SMPL-X + face models",
        "synthetic": f"{SYNTHETIC_SIZE}x{SYNTHETIC_SIZE}, 2-3 people, no face models",
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, core {args.core}",
        "results": {w: {name: _medians(r) for name, r in by_code.items()} for w, by_code in runs.items()},
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
