"""CFG / OA-CFG: exact equality with standard CFG where the mask is 0, the formulas inside it, branch layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from personacraft_jax.sampling import guidance as G

B, H, W, C = 2, 6, 5, 4


@pytest.fixture(scope="module")
def eps():
    rng = np.random.default_rng(0)
    eps_u, eps_c, eps_nc = (jnp.asarray(rng.standard_normal((B, H, W, C)), jnp.float32) for _ in range(3))
    mask = rng.uniform(size=(B, H, W, 1)).astype(np.float32)
    mask[mask < 0.5] = 0.0  # soft mask with a zero region
    return eps_u, eps_c, eps_nc, jnp.asarray(mask)


_oa_jit = jax.jit(G.oa_cfg, static_argnames="mode")
_cfg_jit = jax.jit(G.cfg)


@pytest.mark.parametrize("mode", ["control", "scale"])
def test_zero_mask_is_standard_cfg_bitwise(eps, mode):
    eps_u, eps_c, eps_nc, _ = eps
    zero = jnp.zeros((B, H, W, 1), jnp.float32)
    kw = dict(mode=mode, guidance_scale=7.5, occlusion_scale=3.0)
    assert jnp.array_equal(G.oa_cfg(eps_u, eps_c, eps_nc, zero, **kw), G.cfg(eps_u, eps_c, 7.5))
    assert jnp.array_equal(_oa_jit(eps_u, eps_c, eps_nc, zero, **kw), _cfg_jit(eps_u, eps_c, 7.5))


@pytest.mark.parametrize("mode", ["control", "scale"])
def test_inactive_is_standard_cfg_bitwise(eps, mode):
    eps_u, eps_c, eps_nc, mask = eps
    out = _oa_jit(eps_u, eps_c, eps_nc, mask, mode=mode, guidance_scale=7.5, occlusion_scale=3.0, active=False)
    assert jnp.array_equal(out, _cfg_jit(eps_u, eps_c, 7.5))


@pytest.mark.parametrize("mode", ["control", "scale"])
def test_formula_inside_and_unchanged_outside(eps, mode):
    eps_u, eps_c, eps_nc, mask = eps
    w, k = 5.0, 2.0
    out = np.asarray(_oa_jit(eps_u, eps_c, eps_nc, mask, mode=mode, guidance_scale=w, occlusion_scale=k, active=1))
    std = np.asarray(_cfg_jit(eps_u, eps_c, w))
    u, c, nc, m = (np.asarray(a, np.float64) for a in (eps_u, eps_c, eps_nc, mask))
    if mode == "control":
        want = u + w * (c - u) + k * m * (c - nc)
    else:
        want = u + (w + k * m) * (c - u)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    outside = np.broadcast_to(np.asarray(mask) == 0, out.shape)
    assert outside.any() and (~outside).any()
    assert np.array_equal(out[outside], std[outside])
    assert not np.allclose(out[~outside], std[~outside])


def test_scale_mode_full_mask_is_cfg_with_larger_scale(eps):
    eps_u, eps_c, _, _ = eps
    ones = jnp.ones((B, H, W, 1), jnp.float32)
    out = G.oa_cfg(eps_u, eps_c, None, ones, mode="scale", guidance_scale=5.0, occlusion_scale=2.5)
    np.testing.assert_allclose(out, G.cfg(eps_u, eps_c, 7.5), rtol=1e-6, atol=1e-6)


def test_active_steps_are_the_first_fraction():
    flags = jax.jit(lambda i: G.oa_cfg_active(i, 30, 0.5))
    assert [bool(flags(i)) for i in range(30)] == [True] * 15 + [False] * 15
    assert G.num_active_steps(25, 0.3) == 8  # ceil(7.5)
    assert G.num_active_steps(30, 0.3) == 9  # 0.3 * 30 = 9.000000000000002
    assert G.num_active_steps(30, 1.0) == 30 and G.num_active_steps(30, 0.0) == 0


def test_branch_layout_round_trip():
    rng = np.random.default_rng(1)
    uncond = {"emb": jnp.asarray(rng.standard_normal((B, 3, 8)))}
    cond = {"emb": jnp.asarray(rng.standard_normal((B, 3, 8)))}
    batched = G.batch_branches(uncond, cond, "control")["emb"]
    assert batched.shape == (3 * B, 3, 8)
    u, c, nc = G.split_branches(batched, "control")
    assert jnp.array_equal(u, uncond["emb"]) and jnp.array_equal(c, cond["emb"]) and jnp.array_equal(nc, c)
    assert G.batch_branches(uncond, cond, "scale")["emb"].shape == (2 * B, 3, 8)
    lat = jnp.arange(B * 4.0).reshape(B, 2, 2, 1)
    assert jnp.array_equal(G.split_branches(G.repeat_for_branches(lat, "none"), "none")[1], lat)
    np.testing.assert_array_equal(G.control_branch_scale("control", 2), [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(G.control_branch_scale("scale", 2), [1, 1, 1, 1])
    with pytest.raises(ValueError, match="multiple"):
        G.split_branches(jnp.zeros((5, 1)), "control")


@pytest.mark.parametrize("mode", ["none", "control", "scale"])
def test_guide_end_to_end(eps, mode):
    eps_u, eps_c, eps_nc, mask = eps
    out = jnp.concatenate((eps_u, eps_c, eps_nc)[: G.num_branches(mode)], axis=0)
    config = G.GuidanceConfig(guidance_scale=6.0, oa_mode=mode, occlusion_scale=1.5, oa_fraction=0.5)
    late = G.guide(config, out, mask, 7, 10)  # step 7 of 10: OA-CFG off
    assert jnp.array_equal(late, G.cfg(eps_u, eps_c, 6.0))
    early = G.guide(config, out, mask, 0, 10)
    want = G.oa_cfg(eps_u, eps_c, eps_nc, mask, mode=mode, guidance_scale=6.0, occlusion_scale=1.5)
    assert jnp.array_equal(early, want)
    with pytest.raises(ValueError, match="oa_mode"):
        G.GuidanceConfig(oa_mode="bogus")
