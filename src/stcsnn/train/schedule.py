"""Learning-rate and scheduled-sampling schedules as pure functions of the epoch / iteration.

Being pure functions of counters stored in the checkpoint, they resume exactly with nothing else to save.
"""

from __future__ import annotations

import math

import torch

from stcsnn.config import Config


def learning_rate(cfg: Config, epoch: int) -> float:
    """The reference's schedule (timm ``CosineLRScheduler(t_initial=epochs, warmup_t=warmup_epochs,
    warmup_lr_init=warmup_lr)`` as OpenSTL builds it, stepped per epoch): linear warm-up from ``warmup_lr``
    towards ``lr`` over ``warmup_epochs``, then the cosine of the whole run, ``min_lr + (lr - min_lr) / 2 *
    (1 + cos(pi * epoch / epochs))`` (timm's default ``warmup_prefix=False``: the warm-up epochs count in the
    cosine), ``min_lr`` from ``epochs`` on."""
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * epoch / cfg.warmup_epochs
    progress = min(1.0, epoch / cfg.epochs)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def sampling_eta(cfg: Config, itr: int) -> float:
    """Scheduled sampling (PredRNN): eta starts at ``sampling_start`` and drops by ``sampling_changing_rate``
    per iteration until ``sampling_stop_iter``, after which it is 0. ``itr`` counts from 1."""
    if cfg.sampling in ("teacher", "autoregressive"):
        return 1.0 if cfg.sampling == "teacher" else 0.0
    if itr >= cfg.sampling_stop_iter:
        return 0.0
    return max(0.0, cfg.sampling_start - cfg.sampling_changing_rate * itr)


def reverse_sampling_etas(cfg: Config, itr: int) -> tuple[float, float]:
    """Reverse scheduled sampling (PredRNN-v2): ``(r_eta, eta)``; r_eta is the probability of feeding the true
    frame among the *input* frames, eta among the future frames."""
    s1, s2 = cfg.r_sampling_step_1, cfg.r_sampling_step_2
    if itr < s1:
        return 0.5, 0.5
    if itr < s2:
        return 1.0 - 0.5 * math.exp(-(itr - s1) / cfg.r_exp_alpha), 0.5 - (0.5 / (s2 - s1)) * (itr - s1)
    return 1.0, 0.0


def sampling_mask(cfg: Config, itr: int, batch: int, generator: torch.Generator) -> tuple[torch.Tensor | None, float]:
    """``(mask, eta)`` for one global batch; ``mask[b, j] = 1`` feeds the true frame (None: never).

    Random numbers come from ``generator`` for the whole global batch, so every DDP rank draws the same mask
    and takes its own rows: the run does not depend on the number of processes.
    """
    t_in, t_out = cfg.input_frames, cfg.output_frames
    if cfg.sampling == "autoregressive":
        return None, 0.0
    if cfg.sampling == "teacher":
        return torch.ones(batch, t_out - 1), 1.0
    if cfg.sampling == "scheduled":
        eta = sampling_eta(cfg, itr)
        flips = torch.rand(batch, t_out - 1, generator=generator)
        return (flips < eta).float(), eta
    r_eta, eta = reverse_sampling_etas(cfg, itr)
    r_flips = torch.rand(batch, t_in - 1, generator=generator)
    flips = torch.rand(batch, t_out - 1, generator=generator)
    return torch.cat([(r_flips < r_eta).float(), (flips < eta).float()], 1), eta
