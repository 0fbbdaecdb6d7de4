"""Creating the train state and its shardings on a mesh.

Trainable parameters and the optimizer state are sharded by the logical-axis rules (ZeRO-3 over `fsdp`);
optimizer moments follow their parameters, optimizer scalars and the step / RNG are replicated.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from personacraft_jax.parallel import sharding as sharding_lib
from personacraft_jax.train.step import TrainState


def init_train_state(params: dict[str, nnx.State], optimizer: optax.GradientTransformation, seed: int) -> TrainState:
    """A fresh state at step 0 (call under `jax.jit` with out_shardings to create it sharded)."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        rng=jax.random.key_data(jax.random.key(seed)),
    )


def params_shardings(params: Mapping[str, nnx.State], mesh: Mesh, rules=sharding_lib.DEFAULT_RULES) -> dict:
    """{name: State of NamedSharding} for parameter states (concrete or abstract)."""
    return {name: sharding_lib.state_shardings(state, mesh, rules) for name, state in params.items()}


def train_state_shardings(
    abstract_state: TrainState,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    rules=sharding_lib.DEFAULT_RULES,
) -> TrainState:
    """The NamedShardings of every leaf of a TrainState (e.g. from `jax.eval_shape(init_train_state, ...)`).

    Optimizer moments shaped like the parameters get the parameters' shardings; optimizer scalars
    (counts), the step and the RNG are replicated.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    param_sh = params_shardings(abstract_state.params, mesh, rules)
    opt_sh = optax.tree_map_params(
        optimizer,
        lambda _, sh: sh,
        abstract_state.opt_state,
        param_sh,
        transform_non_params=lambda _: replicated,
    )
    return TrainState(step=replicated, params=param_sh, opt_state=opt_sh, rng=replicated)


def applied_updates(opt_state: optax.OptState) -> jax.Array:
    """The optimizer's count of applied updates (its learning-rate schedule's count): the step minus the
    updates skipped under `nan_policy='skip'`."""
    is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)
    counts = [x.count for x in jax.tree.leaves(opt_state, is_leaf=is_schedule) if is_schedule(x)]
    if len(counts) != 1:
        raise ValueError(f"expected one learning-rate schedule in the optimizer state, found {len(counts)}")
    return counts[0]
