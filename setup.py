"""personacraft-jax: occlusion-aware, identity-preserving multi-person SDXL generation in JAX/Flax NNX."""

from setuptools import find_packages, setup

CORE = [
    "numpy==2.4.6",
    "protobuf==6.33.6",  # < 7 for apache-beam (the prep extra)
    "jax==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex",
    "ml-collections==1.1.0",
    "safetensors",
    "pillow",
    "tqdm",
    "absl-py",
]

EXTRAS = {
    "cpu": ["jax[cpu]==0.10.2"],
    "tpu": ["jax[tpu]==0.10.2"],
    "cuda": ["jax[cuda12]==0.10.2"],
    # The PyTorch side: weight import/export references, data preparation.
    "torch": ["torch==2.13.0", "diffusers==0.42.1", "transformers>=5,<6"],
    "data": ["tensorflow-datasets==4.9.10", "array-record", "grain"],
    "prep": ["smplx==0.1.28", "trimesh", "pyrender==0.1.45", "opencv-python==4.14.*", "apache-beam==2.77.0"],
    "faces": ["insightface==2.1", "onnxruntime", "onnx", "opencv-python==4.14.*"],
    "train": ["tensorboardX"],
    "dev": ["pytest", "pytest-xdist", "ruff"],
}
# Everything for a CPU development machine (what requirements.txt pins).
EXTRAS["all"] = sorted({r for name in ("cpu", "torch", "data", "prep", "faces", "train", "dev") for r in EXTRAS[name]})

setup(
    name="personacraft-jax",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    packages=find_packages(include=["personacraft_jax*", "data_prep*", "launch*", "configs*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
)
