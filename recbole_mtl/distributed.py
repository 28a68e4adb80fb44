"""Multi-process training: torchrun launch, the process group, sharded checkpoints and their export.

One process per rank, started by ``torchrun`` (``run_recbole_mtl.py --nproc=N`` starts it
itself). Each rank reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and joins one process group: gloo on CPU,
NCCL on CUDA (one GPU per local rank). Then

* the embedding tables are sharded by TorchRec (``recbole_mtl.embedding.sharding``);
* the dense layers are replicated and their gradients averaged by DDP;
* RecBole's training loader gives each rank its part of every epoch (``DistributedSampler``);
* every rank evaluates all validation/test users with the sharded model (lookups are collective),
  so the metrics rank 0 reports are those one process computes;
* checkpoints are one file per rank (``<name>.rank<r>-of-<W>.pth``, plain tensors), and rank 0
  joins them into a single-process checkpoint ``<name>.pth`` at the end of the run
  (:func:`recbole_mtl.checkpoint.export_checkpoint`, also
  ``run_recbole_mtl.py export --checkpoint=<name>.pth``).

Whether this process is one rank of several is decided once, by :func:`init_from_env`, and held
in one frozen :class:`DistributedContext` (:func:`context`). RecBole reads the same fact from its
``single_spec`` config key, in two senses: its data loaders and training loop use it to split the
epoch over ranks, and its ``Trainer.__init__`` and ``data_preparation`` use it to set up CUDA-only
DDP and distributed evaluation, which the plugin does its own way. :func:`recbole_view` is the
one place that sets the key.

A rank that dies takes the others down: torchrun stops the remaining workers and reports the
failed rank; without torchrun's monitoring (a lost node) collectives fail after ``dist_timeout``
seconds instead of hanging.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, List, Sequence

import torch
import torch.distributed as dist

from recbole_mtl.errors import ConfigError

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands among the processes of one run (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: Any = None
    backend: str = ""

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = DistributedContext()
_CONTEXT = SINGLE_PROCESS


def context() -> DistributedContext:
    """This process's :class:`DistributedContext` (set once by :func:`init_from_env`)."""
    return _CONTEXT


def _tell_recbole(config, single_process: bool = False) -> None:
    """The only writer of RecBole's ``single_spec`` key: what the context says, or one process."""
    config["single_spec"] = single_process or not _CONTEXT.is_distributed


@contextlib.contextmanager
def recbole_view(config, single_process: bool = False) -> Iterator[None]:
    """RecBole's ``single_spec`` key as the context says, or as one process for the block.

    Args:
        config: the run's config.
        single_process: show RecBole one process during the block (its ``Trainer.__init__`` and
            ``data_preparation`` then skip their CUDA-only DDP and split evaluation); afterwards
            the key says what the context says, which RecBole's training loop reads.
    """
    _tell_recbole(config, single_process)
    try:
        yield
    finally:
        _tell_recbole(config)


def under_torchrun() -> bool:
    """True inside a process started by torchrun (or any launcher setting its variables)."""
    return all(k in os.environ for k in TORCHRUN_ENV) and int(os.environ["WORLD_SIZE"]) > 1


def is_distributed(config: Any = None) -> bool:
    """True when this process trains as one rank of several (``config`` is not needed)."""
    return _CONTEXT.is_distributed


def rank() -> int:
    return _CONTEXT.rank


def world_size() -> int:
    return _CONTEXT.world_size


def local_world_size() -> int:
    return _CONTEXT.local_world_size


def init_from_env(config) -> bool:
    """Join the process group torchrun describes and record it in ``config``.

    Creates the process's :class:`DistributedContext` and sets RecBole's keys: ``single_spec``
    False (through :func:`recbole_view`), ``local_rank`` (the global rank, which RecBole compares
    with 0 to pick the rank that logs), ``world_size``, ``device``; ranks other than 0 log errors
    only. Does nothing (returns False) outside torchrun.
    """
    global _CONTEXT
    if not under_torchrun():
        return False
    global_rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
    use_cuda = torch.cuda.is_available() and str(config["gpu_id"] or "") != ""
    if use_cuda:
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", size))
        if torch.cuda.device_count() < local_size:
            raise ConfigError(
                f"{local_size} processes on this node but only {torch.cuda.device_count()} visible GPU(s) "
                f"(gpu_id='{config['gpu_id']}'); list one GPU per process, e.g. --gpu_id='0,1'."
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=float(config["dist_timeout"] or 60)))
    if not _CONTEXT.is_distributed:  # once per process; later runs in it (one per config) share it
        _CONTEXT = DistributedContext(global_rank, size, int(os.environ.get("LOCAL_WORLD_SIZE", size)), device,
                                      backend)
    _tell_recbole(config)
    config["local_rank"] = global_rank
    config["world_size"] = size
    config["nproc"] = int(os.environ.get("LOCAL_WORLD_SIZE", size))
    config["device"] = device
    if global_rank != 0:
        config["state"] = "error"
        config["show_progress"] = False
        config["verbose"] = False
    return True


def launch(argv: Sequence[str], nproc: int, ip: str, port: str, world_size_arg: int, group_offset: int) -> int:
    """Run ``recbole_mtl.cli`` under torchrun with ``nproc`` processes on this node.

    RecBole's flags map to torchrun's: ``--world_size`` / ``--nproc`` nodes, this node's rank
    ``--group_offset // --nproc``, rendezvous at ``--ip:--port`` (``--port=0`` on one node: any
    free port).

    Returns:
        torchrun's exit status (non-zero when a rank failed; torchrun names it).
    """
    total = world_size_arg if world_size_arg > 0 else nproc
    if total % nproc or group_offset % nproc:
        raise ConfigError(f"--world_size={total} and --group_offset={group_offset} must be multiples of "
                          f"--nproc={nproc} (every node runs --nproc processes).")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if total == nproc and str(port) == "0":  # one node, any free port
        cmd.append("--standalone")
    else:
        cmd += [f"--nnodes={total // nproc}", f"--node_rank={group_offset // nproc}",
                f"--master_addr={ip}", f"--master_port={port}"]
    cmd += ["-m", "recbole_mtl.cli", *argv]
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.call(cmd, env=env)


# -- small collectives --------------------------------------------------------------------------
def broadcast_object(value: Any, src: int = 0) -> Any:
    """``value`` of rank ``src`` on every rank (identity in one process)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def mean_over_ranks(values: Sequence[float]) -> List[float]:
    """Average a few floats over ranks (for logging the global training loss)."""
    if not is_distributed():
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64)
    dist.all_reduce(tensor)
    return (tensor / world_size()).tolist()


def barrier() -> None:
    if is_distributed():
        dist.barrier()
