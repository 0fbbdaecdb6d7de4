"""optax AdamW with linear warmup, a decay schedule and global-norm clipping, built from the config."""

from __future__ import annotations

from typing import Any

import optax


def learning_rate_schedule(cfg: Any) -> optax.Schedule:
    """Linear warmup over `warmup_steps` to `learning_rate`, then 'constant' or 'cosine' decay to `end_lr`."""
    if cfg.schedule == "constant":
        decay = optax.constant_schedule(cfg.learning_rate)
    elif cfg.schedule == "cosine":
        decay_steps = max(cfg.num_steps - cfg.warmup_steps, 1)
        decay = optax.cosine_decay_schedule(cfg.learning_rate, decay_steps, alpha=cfg.end_lr / cfg.learning_rate)
    else:
        raise ValueError(f"config train.schedule={cfg.schedule!r}; expected 'constant' or 'cosine'")
    if cfg.warmup_steps <= 0:
        return decay
    warmup = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
    return optax.join_schedules([warmup, decay], [cfg.warmup_steps])


def make_optimizer(cfg: Any) -> optax.GradientTransformation:
    """Clip by global norm (`grad_clip_norm`, 0 = off), then AdamW with the schedule above."""
    adamw = optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), adamw)
    return adamw
