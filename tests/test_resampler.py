"""The perceiver Resampler against a PyTorch reference written from IP-Adapter's architecture description."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from personacraft_jax.convert import state_dict as sd
from personacraft_jax.convert.state_dict import StateDictMismatchError
from personacraft_jax.models import resampler as R
from tests.tiny_diffusers import randomize_torch, rel_err

TOL = 1e-4


class TorchPerceiverAttention(nn.Module):
    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = dim_head * heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x, latents):
        x, latents = self.norm1(x), self.norm2(latents)
        b, n, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)
        split = lambda t: t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)
        scale = 1 / math.sqrt(math.sqrt(self.dim_head))  # IP-Adapter scales q and k by d^-1/4 each
        weight = torch.softmax((q * scale) @ (k * scale).transpose(-2, -1), dim=-1)
        return self.to_out((weight @ v).permute(0, 2, 1, 3).reshape(b, n, -1))


class TorchResampler(nn.Module):
    def __init__(self, c: R.ResamplerConfig):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, c.num_queries, c.dim) / c.dim**0.5)
        self.proj_in = nn.Linear(c.embedding_dim, c.dim)
        self.proj_out = nn.Linear(c.dim, c.output_dim)
        self.norm_out = nn.LayerNorm(c.output_dim)
        ff = lambda: nn.Sequential(
            nn.LayerNorm(c.dim),
            nn.Linear(c.dim, c.dim * c.ff_mult, bias=False),
            nn.GELU(),
            nn.Linear(c.dim * c.ff_mult, c.dim, bias=False),
        )
        self.layers = nn.ModuleList(
            [nn.ModuleList([TorchPerceiverAttention(c.dim, c.dim_head, c.heads), ff()]) for _ in range(c.depth)]
        )

    def forward(self, x):
        latents = self.latents.repeat(x.size(0), 1, 1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    cfg = R.ResamplerConfig(dim=32, depth=2, dim_head=16, heads=3, num_queries=5, embedding_dim=20, output_dim=24)
    ref = randomize_torch(TorchResampler(cfg), seed=1)
    tensors = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    return cfg, ref, tensors


def test_keys_and_shapes_mirror_the_reference(pair):
    cfg, _, tensors = pair
    model = nnx.eval_shape(lambda: R.Resampler(cfg, rngs=nnx.Rngs(0)))
    assert sd.expected_keys(model) == {k: tuple(v.shape) for k, v in tensors.items()}
    assert R.ResamplerConfig.from_state_dict(tensors, dim_head=16) == cfg


def test_resampler_parity(pair):
    cfg, ref, tensors = pair
    model = R.load_resampler(tensors, dim_head=16)
    x = np.random.default_rng(0).standard_normal((3, 2, cfg.embedding_dim)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    out = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(x))
    assert out.shape == (3, cfg.num_queries, cfg.output_dim)
    err = rel_err(out, expected)
    print(f"resampler rel err {err:.2e}")
    assert err <= TOL
    # One embedding per row (B, E) is one token, as InstantID feeds it.
    np.testing.assert_allclose(model(jnp.asarray(x[:, 0])), model(jnp.asarray(x[:, :1])), rtol=1e-6)


def test_strict_loading_names_the_key(pair):
    _, _, tensors = pair
    bad = {k: v for k, v in tensors.items() if k != "layers.1.0.to_out.weight"}
    with pytest.raises(StateDictMismatchError, match=r"layers\.1\.0\.to_out\.weight"):
        R.load_resampler(bad, dim_head=16)
    with pytest.raises(StateDictMismatchError, match=r"layers\.0\.1\.1\.bias"):
        R.load_resampler({**tensors, "layers.0.1.1.bias": np.zeros(128, np.float32)}, dim_head=16)


def test_presets():
    c = R.preset("instantid")
    assert (c.dim, c.depth, c.dim_head, c.heads, c.num_queries, c.embedding_dim, c.output_dim, c.ff_mult) == (
        1280, 4, 64, 20, 16, 512, 2048, 4)  # fmt: skip
    model = nnx.eval_shape(lambda: R.Resampler(c, rngs=nnx.Rngs(0)))
    with torch.device("meta"):
        expected = sum(p.numel() for p in TorchResampler(c).parameters())
    assert sum(int(np.prod(s)) for s in sd.expected_keys(model).values()) == expected
    with pytest.raises(ValueError, match="unknown Resampler preset"):
        R.preset("huge")
