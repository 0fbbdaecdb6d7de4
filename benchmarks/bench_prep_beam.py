"""Beam data-prep scaling: examples/s in process and with 1 and 2 Beam workers (DirectRunner), side by side.

    .venv/bin/python benchmarks/bench_prep_beam.py --num_examples=24 --size=512 [--workers=1,2] [--out=FILE]

Runs `data_prep.prep_job.run_prep` on the same synthetic config (3-person scenes, stand-in SMPL-X and face
models) in process and on Beam's DirectRunner (FnApiRunner, `direct_running_mode=multi_processing`) with
each worker count, each into a fresh folder. Every mode runs twice, with 2 and with N examples: the end-to-end
rate N / t_N includes the fixed costs (Beam start-up, worker processes loading their models, the final
write), the marginal rate (N - 2) / (t_N - t_2) is the per-example throughput once running. `--repeats`
rounds run every mode, in a rotating order; medians are reported, with each run's 1-minute load average. A
1-example in-process warm-up generates the stand-ins first. All runs must write identical records (checked).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import platform
import statistics
import tempfile
import time

from configs import prep_synthetic
from data_prep.prep_job import run_prep

SMALL = 2


def _config(num: int, size: int, people: int, cache_dir: str):
    """The benchmark scenes: `num` synthetic scenes of `people` people at size x size, stand-in faces."""
    cfg = prep_synthetic.get_config()
    cfg.update(dict(num_examples=num, width=size, height=size, min_people=people, max_people=people))
    cfg.update(dict(standin_face_models=True, cache_dir=cache_dir))
    return cfg


def _options(workers: int | None) -> str | None:
    if workers is None:
        return None
    return f"runner=DirectRunner,direct_num_workers={workers},direct_running_mode=multi_processing"


def _records_digest(data_dir: pathlib.Path) -> str:
    """SHA-256 of every stored record, raw, in split order."""
    from array_record.python import array_record_module

    from data_prep import dataset

    digest = hashlib.sha256()
    for shard in sorted(dataset.version_dir(data_dir).glob("*.array_record-*")):
        reader = array_record_module.ArrayRecordReader(str(shard))
        for record in reader.read_all():
            digest.update(hashlib.sha256(record).digest())
        reader.close()
    return digest.hexdigest()


def _timed(cfg, data_dir: pathlib.Path, workers: int | None) -> tuple[float, dict]:
    start = time.perf_counter()
    report = run_prep(cfg, data_dir, progress=False, beam_pipeline_options=_options(workers))
    return time.perf_counter() - start, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_examples", type=int, default=24)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--people", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="comma-separated Beam worker counts")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all modes (medians are reported)")
    parser.add_argument("--cache_dir", default="~/.cache/personacraft_jax/prep")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.num_examples <= SMALL:
        parser.error(f"--num_examples must exceed {SMALL}")

    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    modes = [None, *(int(w) for w in args.workers.split(","))]
    names = {mode: "in_process" if mode is None else f"beam_{mode}_workers" for mode in modes}
    runs: dict[str, list[dict]] = {name: [] for name in names.values()}
    digests = set()
    with tempfile.TemporaryDirectory(prefix="bench_prep_beam_") as tmp:
        tmp = pathlib.Path(tmp)
        run_prep(_config(1, args.size, args.people, args.cache_dir), tmp / "warmup", progress=False)
        for round_index in range(args.repeats):
            # Rotate the order so that a change in the machine's load does not always hit the same mode.
            for mode in modes[round_index % len(modes) :] + modes[: round_index % len(modes)]:
                name, folder = names[mode], tmp / f"{names[mode]}_{round_index}"
                load = os.getloadavg()[0]
                t_small, _ = _timed(_config(SMALL, args.size, args.people, args.cache_dir), folder / "small", mode)
                cfg = _config(args.num_examples, args.size, args.people, args.cache_dir)
                t_full, report = _timed(cfg, folder / "full", mode)
                digests.add(_records_digest(folder / "full"))
                run = {
                    "seconds": round(t_full, 2),
                    "examples_per_s_end_to_end": round(report["written"] / t_full, 3),
                    "examples_per_s_marginal": round((args.num_examples - SMALL) / max(t_full - t_small, 1e-9), 3),
                    "load_average_1min_before": round(load, 2),
                }
                runs[name].append(run)
                print(name, json.dumps(run), flush=True)
    if len(digests) != 1:
        raise RuntimeError(f"the runs wrote different records ({len(digests)} different digests)")
    results = {
        name: {
            "median_examples_per_s_end_to_end": statistics.median(r["examples_per_s_end_to_end"] for r in rs),
            "median_examples_per_s_marginal": statistics.median(r["examples_per_s_marginal"] for r in rs),
            "runs": rs,
        }
        for name, rs in runs.items()
    }
    summary = {
        "benchmark": "prep_beam",
        "size": args.size,
        "people": args.people,
        "num_examples": args.num_examples,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "results": results,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
