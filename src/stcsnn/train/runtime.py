"""Where a run executes: the process's rank among the processes of a DDP run (torchrun) and its device.

Distributed runs are detected from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).
NCCL is used on GPUs, gloo on CPUs. On GPUs each rank takes its own: ``cuda`` (or ``auto``) is GPU ``LOCAL_RANK``
and ``cuda:N`` is GPU ``N + LOCAL_RANK`` (:func:`stcsnn.device.pick_device`).
The checks that need the resolved device are made here, before any work: ``device: auto`` is only known to be
a CPU or a GPU at run time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from stcsnn.config import Config
from stcsnn.device import pick_device
from stcsnn.errors import ConfigError


@dataclass
class Runtime:
    """This process's place in the run: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str | None = None  # the process group's (nccl, gloo); None for one process
    owns_group: bool = False  # this run created the process group (and so destroys it: :func:`close_runtime`)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs, validates and writes files."""
        return self.rank == 0

    def rows(self, batch: int) -> slice:
        """This rank's contiguous slice of a global batch of ``batch`` samples."""
        per_rank = batch // self.world
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)


def is_main_process() -> bool:
    """Rank 0 (or no launcher), read from the environment before any process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def setup_runtime(cfg: Config) -> Runtime:
    """Resolve the device, check what depends on it, and join the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(cfg.device, local_rank)
    if cfg.amp == "fp16" and device.type == "cpu":
        # config validation catches device: cpu; with device: auto only now is the CPU known
        raise ConfigError(f"config key 'amp' is fp16, which needs a CUDA device (its gradient scaler exists only "
                          f"there), but device {cfg.device!r} resolved to the CPU; use amp: bf16 or null on the "
                          "CPU")
    if device.type == "cuda":
        # a run's convolutions keep their shapes step after step: let cuDNN time its algorithms once per shape
        # and keep the fastest (cuDNN's backward convolutions are not bitwise reproducible on GPUs either way)
        torch.backends.cudnn.benchmark = True
    backend, owns_group = None, False
    if world > 1:
        import torch.distributed as dist

        if cfg.batch_size % world:
            raise ConfigError(f"batch_size {cfg.batch_size} (global) must divide by the {world} processes")
        if device.type == "cuda":
            # before the process group: NCCL binds each rank's communicator to the current device, and a rank
            # that has not chosen one talks through GPU 0 (every rank's memory and traffic on one GPU)
            torch.cuda.set_device(device)
        if not dist.is_initialized():  # a caller's own group (train() called from its script) is left to it
            dist.init_process_group(**process_group_options(device))
            owns_group = True
        backend = str(dist.get_backend())
    return Runtime(rank, world, local_rank, device, backend, owns_group)


def close_runtime(rt: Runtime) -> None:
    """Destroy the process group this run created, once every rank has finished with it.

    Called on the ranks' agreed way out (done, or stopped by a signal they agreed on), never after an error: a rank
    that raised may leave the others inside a collective, and destroying the group then can hang. Without it, gloo's
    worker threads are torn down with the interpreter, and a rank can abort at exit ("terminate called without an
    active exception", SIGABRT) after a run that succeeded: pytorch/pytorch#190489."""
    if rt.owns_group:
        import torch.distributed as dist

        dist.destroy_process_group()
        rt.owns_group = False


def process_group_options(device: torch.device) -> dict:
    """``init_process_group``'s arguments: NCCL bound to this rank's GPU (``device_id``, where the installed
    torch takes it: the communicator is created at once on the right device), gloo on the CPU."""
    import inspect

    import torch.distributed as dist

    if device.type != "cuda":
        return {"backend": "gloo"}
    options = {"backend": "nccl"}
    if "device_id" in inspect.signature(dist.init_process_group).parameters:
        options["device_id"] = device
    return options


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over the ranks in place (DDP runs only); returns it."""
    import torch.distributed as dist

    dist.all_reduce(t)
    return t


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()
