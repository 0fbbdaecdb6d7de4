"""Rendering throughput of data_prep.render.SceneRenderer (render only: posing and shading are timed apart).

Example: PYOPENGL_PLATFORM=egl .venv/bin/python benchmarks/bench_render.py --size 1024 --people 3 --scenes 8
Uses the generated SMPL-X-format stand-in (same vertex / face counts as SMPL-X) and synthetic scenes.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="square render resolution (px)")
    parser.add_argument("--people", type=int, default=3, help="people per scene")
    parser.add_argument("--scenes", type=int, default=8, help="timed scenes")
    parser.add_argument("--warmup", type=int, default=1, help="untimed scenes first")
    parser.add_argument("--platform", choices=("egl", "osmesa"), default="egl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-root", default=None, help="folder with smplx/SMPLX_NEUTRAL.npz (default: stand-in)")
    return parser.parse_args()


def main() -> None:
    args = _parse()
    from data_prep.render import SceneRenderer  # sets PYOPENGL_PLATFORM before OpenGL is imported

    renderer = SceneRenderer(args.size, args.size, platform=args.platform)
    from data_prep.body_model import BodyModel, write_standin_smplx_model
    from data_prep.scenes import pose_scene, posed_synthetic_scene, shade_scene

    with tempfile.TemporaryDirectory() as tmp:
        root = args.model_root or write_standin_smplx_model(tmp).parent.parent
        body = BodyModel(root)
    rng = np.random.default_rng(args.seed)
    total = args.warmup + args.scenes
    scenes, pose_s = [], 0.0
    for _ in range(total):
        fit, _, _ = posed_synthetic_scene(rng, body, args.size, args.size, args.people, args.people)
        start = time.perf_counter()
        scenes.append((fit, *pose_scene(body, fit)))
        pose_s += time.perf_counter() - start
    render_times, shade_times = [], []
    for i, (fit, meshes, joints) in enumerate(scenes):
        start = time.perf_counter()
        renderer.render(meshes, fit.K, joints)
        mid = time.perf_counter()
        shade_scene(renderer, meshes, fit.K, rng)
        end = time.perf_counter()
        if i >= args.warmup:
            render_times.append(mid - start)
            shade_times.append(end - mid)
    renderer.close()
    render_s = float(np.mean(render_times))
    rows = [
        ("render (all fields)", render_s),
        ("shade (synthetic photo)", float(np.mean(shade_times))),
        ("pose (smplx forward, per scene)", pose_s / total),
    ]
    print(f"resolution {args.size}x{args.size}, {args.people} people/scene, {args.scenes} timed scenes")
    print(f"{'stage':34s} {'s/example':>10s} {'examples/s':>11s}")
    for name, seconds in rows:
        print(f"{name:34s} {seconds:10.3f} {1.0 / seconds:11.2f}")


if __name__ == "__main__":
    main()
