"""A person reader for generated images: a small fully-convolutional net that reads, per pixel, whether a
person is there (foreground) and whether a person boundary is (depth edges: person-background and
person-person outlines, self-occlusion outlines).

It is trained on photos whose ground truth is known (a data set's `image` with `instance > 0` and
`depth_edges`), then validated on held-out photos before it is trusted to read generated images. Used by the
demo's evaluation: everything it reports about generated images goes through this reader, never through the
conditioning the sampler was fed.

Architecture: a 3-level encoder-decoder (3x3 convs, GroupNorm, SiLU, stride-2 downsampling, nearest
upsampling with skip concatenation), 2 output logits per pixel. Input: the NHWC image in [-1, 1] and its difference from each row's median colour (`_to_input`); H, W multiples of 4.
Loss: binary cross-entropy per map; boundary pixels are up-weighted by `edge_weight` (they are rare).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


@dataclasses.dataclass(frozen=True)
class ReaderTraining:
    """Settings of `train_reader` (the demo config's `reader` section)."""

    widths: tuple[int, int, int] = (16, 32, 64)
    steps: int = 400
    batch_size: int = 32
    learning_rate: float = 2e-3
    edge_weight: float = 3.0
    min_saturation: float = 0.0  # each training image's colours are scaled by a saturation in [this, 1]
    first_rendition_fraction: float | None = None  # share of examples from `images[0]` (None: all equally)
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.min_saturation <= 1.0:
            raise ValueError(f"reader min_saturation={self.min_saturation}; expected a value in [0, 1]")
        if self.first_rendition_fraction is not None and not 0.0 < self.first_rendition_fraction < 1.0:
            raise ValueError(
                f"reader first_rendition_fraction={self.first_rendition_fraction}; expected a value in (0, 1)"
            )


class _ConvBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, *, stride: int = 1, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=stride, padding=1, rngs=rngs)
        self.norm1 = nnx.GroupNorm(cout, num_groups=min(8, cout), rngs=rngs)
        self.conv2 = nnx.Conv(cout, cout, (3, 3), padding=1, rngs=rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=min(8, cout), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.silu(self.norm1(self.conv1(x)))
        return jax.nn.silu(self.norm2(self.conv2(x)))


def _upsample(x: jax.Array) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class PersonReader(nnx.Module):
    """(B, H, W, 3) in [-1, 1] -> (B, H, W, 2) logits: [..., 0] foreground, [..., 1] person boundary."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), *, rngs: nnx.Rngs):
        a, b, c = widths
        self.enc1 = _ConvBlock(INPUT_CHANNELS, a, rngs=rngs)
        self.enc2 = _ConvBlock(a, b, stride=2, rngs=rngs)
        self.enc3 = _ConvBlock(b, c, stride=2, rngs=rngs)
        self.dec2 = _ConvBlock(c + b, b, rngs=rngs)
        self.dec1 = _ConvBlock(b + a, a, rngs=rngs)
        self.head = nnx.Conv(a, 2, (1, 1), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(f"PersonReader: image size {x.shape[1:3]} is not a multiple of 4")
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(jnp.concatenate([_upsample(e3), e2], axis=-1))
        d1 = self.dec1(jnp.concatenate([_upsample(d2), e1], axis=-1))
        return self.head(d1)


def reader_loss(logits: jax.Array, foreground: jax.Array, edges: jax.Array, edge_weight: float) -> jax.Array:
    """Mean BCE of the foreground map + mean BCE of the boundary map with positives weighted `edge_weight`."""
    fg = optax.sigmoid_binary_cross_entropy(logits[..., 0], foreground)
    edge = optax.sigmoid_binary_cross_entropy(logits[..., 1], edges) * (1.0 + (edge_weight - 1.0) * edges)
    return jnp.mean(fg) + jnp.mean(edge)


INPUT_CHANNELS = 6


def _to_input(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H, W, 6) float32 in about [-1, 1]: the image, and its difference from each
    row's median colour (the synthetic backgrounds are constant along rows: a person stands out there)."""
    x = np.asarray(images, np.float32) / 127.5 - 1.0
    return np.concatenate([x, x - np.median(x, axis=2, keepdims=True)], axis=-1)


def _desaturate(images: np.ndarray, saturation: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 images blended towards their grey (luma) by per-image `saturation` in [0, 1]."""
    x = images.astype(np.float32)
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    s = saturation.astype(np.float32)[:, None, None, None]
    return np.clip(grey[..., None] + s * (x - grey[..., None]) + 0.5, 0, 255).astype(np.uint8)


def train_reader(
    images: np.ndarray | tuple[np.ndarray, ...],
    foreground: np.ndarray,
    edges: np.ndarray,
    settings: ReaderTraining,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[PersonReader, list[dict[str, float]]]:
    """Trains a reader on (N, H, W, 3) uint8 `images` with their (N, H, W) boolean `foreground` and `edges`.

    `images` may be a tuple of aligned renditions of the same N photos (e.g. the photos and their VAE
    reconstructions): each training example then picks one at random (the first with probability
    `settings.first_rendition_fraction`, if set), so the reader also reads the blur and colour shifts of
    decoded images. Batches are random with horizontal flips and a random desaturation per image (saturation
    in [`settings.min_saturation`, 1]: a generated image's colours may be washed out; its people must still be
    read), seeded."""
    renditions = images if isinstance(images, tuple) else (images,)
    n = len(foreground)
    if any(r.shape[:3] != foreground.shape for r in renditions) or edges.shape != foreground.shape:
        raise ValueError("train_reader: images, foreground and edges must be aligned (N, H, W)")
    probabilities = _rendition_probabilities(len(renditions), settings.first_rendition_fraction)
    model = PersonReader(settings.widths, rngs=nnx.Rngs(settings.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    optimizer = optax.adam(optax.cosine_decay_schedule(settings.learning_rate, settings.steps, alpha=0.05))
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, x, fg, edge):
        def loss_fn(p):
            return reader_loss(nnx.merge(graphdef, p)(x), fg, edge, settings.edge_weight)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(settings.seed)
    stack = np.stack(renditions)  # (R, N, H, W, 3)
    history: list[dict[str, float]] = []
    for i in range(settings.steps):
        index = rng.integers(0, n, settings.batch_size)
        which = rng.choice(len(renditions), settings.batch_size, p=probabilities)
        flip = (rng.random(settings.batch_size) < 0.5)[:, None, None]
        x, fg, edge = stack[which, index], foreground[index], edges[index]
        saturation = settings.min_saturation + (1.0 - settings.min_saturation) * rng.random(settings.batch_size)
        x = _desaturate(np.where(flip[..., None], x[:, :, ::-1], x), saturation)
        fg, edge = np.where(flip, fg[:, :, ::-1], fg), np.where(flip, edge[:, :, ::-1], edge)
        params, opt_state, loss = step(params, opt_state, _to_input(x), fg.astype(np.float32), edge.astype(np.float32))
        if (i + 1) % 25 == 0 or i + 1 == settings.steps:
            history.append({"step": i + 1, "loss": float(loss)})
            if on_step is not None:
                on_step(i + 1, float(loss))
    return nnx.merge(graphdef, params), history


def _rendition_probabilities(count: int, first_fraction: float | None) -> np.ndarray:
    """Sampling probabilities of `count` renditions: `first_fraction` for the first, the rest shared equally."""
    if first_fraction is None or count == 1:
        return np.full(count, 1.0 / count)
    return np.array([first_fraction] + [(1.0 - first_fraction) / (count - 1)] * (count - 1))


def read(reader: PersonReader, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 -> boolean (foreground (N, H, W), boundary (N, H, W)) at probability 0.5."""
    graphdef, params = nnx.split(reader, nnx.Param)
    apply = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x) > 0.0)
    out = np.concatenate(
        [np.asarray(apply(params, _to_input(images[i : i + batch_size]))) for i in range(0, len(images), batch_size)]
    )
    return out[..., 0], out[..., 1]
