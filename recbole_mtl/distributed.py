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
  (:func:`export_checkpoint`, also ``run_recbole_mtl.py export --checkpoint=<name>.pth``).

A rank that dies takes the others down: torchrun stops the remaining workers and reports the
failed rank; without torchrun's monitoring (a lost node) collectives fail after ``dist_timeout``
seconds instead of hanging.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from datetime import timedelta
from logging import getLogger
from pathlib import Path
from typing import Any, List, Optional, Sequence

import torch
import torch.distributed as dist

from recbole_mtl.errors import ConfigError

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_SHARD_RE = re.compile(r"\.rank(\d+)-of-(\d+)\.pth$")


def under_torchrun() -> bool:
    """True inside a process started by torchrun (or any launcher setting its variables)."""
    return all(k in os.environ for k in TORCHRUN_ENV) and int(os.environ["WORLD_SIZE"]) > 1


def is_distributed(config: Any = None) -> bool:
    """True when this process trains as one rank of several."""
    if config is not None:
        return not config["single_spec"]
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))


def init_from_env(config) -> bool:
    """Join the process group torchrun describes and record it in ``config``.

    Sets RecBole's keys: ``single_spec`` False, ``local_rank`` (the global rank, which RecBole
    compares with 0 to pick the rank that logs), ``world_size``, ``device``; ranks other than 0
    log errors only. Does nothing (returns False) outside torchrun.
    """
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
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                timeout=timedelta(seconds=float(config["dist_timeout"] or 60)))
    config["single_spec"] = False
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


# -- sharded checkpoints ------------------------------------------------------------------------
def shard_path(path: str, rank_: int, world: int) -> str:
    """``saved/MTLRec-x.pth`` -> ``saved/MTLRec-x.rank0-of-2.pth``."""
    stem = path[:-4] if path.endswith(".pth") else path
    return f"{stem}.rank{rank_}-of-{world}.pth"


def shard_files(path: str) -> List[str]:
    """The per-rank files written for ``path``, ordered by rank (clear error when incomplete)."""
    stem = path[:-4] if path.endswith(".pth") else path
    files = glob.glob(glob.escape(stem) + ".rank*-of-*.pth")
    found = {}
    for f in files:
        m = _SHARD_RE.search(f)
        if m:
            found.setdefault(int(m.group(2)), {})[int(m.group(1))] = f
    if not found:
        raise ConfigError(f"no sharded checkpoint files {stem}.rank<r>-of-<W>.pth beside {path}.")
    if len(found) > 1:
        raise ConfigError(f"sharded checkpoint files of several world sizes {sorted(found)} beside {path}; "
                          "keep one set.")
    (world, by_rank), = found.items()
    missing = sorted(set(range(world)) - set(by_rank))
    if missing:
        raise ConfigError(f"sharded checkpoint {stem} lacks the files of ranks {missing} (of {world}).")
    return [by_rank[r] for r in range(world)]


def export_checkpoint(path: str, out: Optional[str] = None) -> str:
    """Join the per-rank files of ``path`` into one single-process checkpoint.

    Args:
        path: ``<name>.pth`` whose ``<name>.rank<r>-of-<W>.pth`` files exist.
        out: where to write (default ``path``).

    Returns:
        The written file. It loads with ``weights_only=True``, and ``run_recbole_mtl.py``
        evaluates or resumes it in one process; the tables' fused-optimizer accumulators are not
        carried over (they restart from zero if training resumes from it).
    """
    from recbole_mtl.compat import atomic_torch_save, load_checkpoint
    from recbole_mtl.embedding.sharding import merge_shards

    states = [load_checkpoint(f) for f in shard_files(path)]
    sparse = [s["other_parameter"]["sparse_optimizer"] for s in states]
    full = merge_shards(sparse)
    checkpoint = dict(states[0])
    checkpoint["state_dict"] = dict(states[0]["state_dict"])
    checkpoint["state_dict"].update({f"sparse.{k}": v for k, v in full.items()})
    checkpoint["other_parameter"] = {"sparse_optimizer": {}}
    checkpoint["exported_from"] = {"world_size": sparse[0]["world_size"], "plan": sparse[0]["plan"]}
    target = out or path
    atomic_torch_save(checkpoint, target)
    getLogger().info(f"exported the sharded checkpoint of {len(states)} ranks to {target}")
    return target


def is_shard_file(path: str) -> bool:
    return bool(_SHARD_RE.search(str(path)))
