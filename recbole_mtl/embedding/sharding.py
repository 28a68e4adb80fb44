"""The sparse arch sharded over processes with TorchRec's planner and ``DistributedModelParallel``.

``shard_sparse_arch`` builds, instead of the single-process :class:`SparseArch`, a
:class:`ShardedSparseArch` with the same ``forward`` (item KJT, feature KJT in; item-id
embeddings, pooled features out), so nothing outside ``recbole_mtl.embedding`` knows whether the
tables are sharded:

* the table configs are built on the ``meta`` device (no rank allocates a whole table), each table
  gets its fused optimizer with ``apply_optimizer_in_backward`` (FBGEMM updates the rows inside
  ``backward()``);
* ``EmbeddingShardingPlanner`` chooses a sharding type and compute kernel per table within the
  user's ``sharding_types`` / ``compute_kernels`` constraints; the plan is logged;
* ``DistributedModelParallel`` allocates each rank's shards only, and each shard is filled with
  its rows' row-keyed initial values (:mod:`recbole_mtl.embedding.init`: a row's value depends
  only on (seed, table, row)), so 1 and N processes start alike.

TorchRec averages the gradients of sharded tables over ranks (as DDP does for dense ones), so N
processes each on B/N rows make the step one process makes on B rows.

On CPU TorchRec's ``EmbeddingBagCollectionSharder`` offers no ``row_wise`` (it reserves it for
CUDA) although FBGEMM's CPU kernels serve it; :class:`CPURowWiseEmbeddingBagSharder` adds it.

Checkpoints hold each rank's local shards as plain tensors with their offsets
(:meth:`ShardedSparseArch.sparse_optimizer_state`); :func:`recbole_mtl.checkpoint.merge_shards`
joins the shards of all ranks into the full tables of a single-process checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from logging import getLogger
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingCollection, KeyedJaggedTensor
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import LazyAwaitable, ShardingEnv, ShardingPlan, ShardingType
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torch.distributed._shard.sharded_tensor import ShardedTensor

from recbole_mtl.embedding.init import fill_rows
from recbole_mtl.errors import ConfigError

#: ``sharding_types`` values (TorchRec's ``ShardingType`` names) that run on CPU with gloo.
SHARDING_TYPES = ("table_wise", "row_wise", "column_wise", "table_row_wise", "data_parallel")
#: ``compute_kernels`` values: FBGEMM kernels with the optimizer fused in, or dense tables
#: (``data_parallel`` only; their rows are updated by the same optimizer after the gradient is
#: averaged over ranks).
COMPUTE_KERNELS = ("fused", "dense")


class CPURowWiseEmbeddingBagSharder(EmbeddingBagCollectionSharder):
    """TorchRec's pooled-collection sharder with ``row_wise``/``table_row_wise`` on CPU too."""

    def sharding_types(self, compute_device_type: str) -> List[str]:
        types = super().sharding_types(compute_device_type)
        extra = [ShardingType.ROW_WISE.value, ShardingType.TABLE_ROW_WISE.value]
        return types + [t for t in extra if t not in types]


class _ReplicatedTableOptimizer:
    """Optimizer of the ``data_parallel`` tables, run inside ``backward()`` like the fused ones.

    TorchRec 1.8 counts replicated tables among the sharded parameters, so DMP's DDP never
    averages their gradients, and the optimizer attached to the unsharded tables is gone with
    them. Here each replicated table's gradient is averaged over ranks (as DDP would) and its
    optimizer stepped as soon as the gradient is accumulated.
    """

    def __init__(self, params: Dict[str, nn.Parameter], optimizer_type, optimizer_kwargs: Dict[str, Any],
                 pg: dist.ProcessGroup):
        self.pg = pg
        # Each table is a view of one flat batched weight per kernel group; that weight is the
        # autograd leaf. Every table gets a parameter aliasing its rows and its own optimizer.
        groups: Dict[int, Tuple[torch.Tensor, List[Tuple[nn.Parameter, int]]]] = {}
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}
        for name, p in sorted(params.items()):
            leaf = getattr(p, "_original_tensor", p)
            table = nn.Parameter(p.detach())  # shares the rows' storage
            offset = p.storage_offset() - leaf.storage_offset()
            groups.setdefault(id(leaf), (leaf, []))[1].append((table, offset))
            self.optimizers[name] = optimizer_type([table], **optimizer_kwargs)
        for leaf, tables in groups.values():
            leaf.register_post_accumulate_grad_hook(self._hook(tables, list(self.optimizers.values())))

    def _hook(self, tables: List[Tuple[nn.Parameter, int]], optimizers: List[torch.optim.Optimizer]):
        by_param = {id(opt.param_groups[0]["params"][0]): opt for opt in optimizers}

        def step(leaf: torch.Tensor) -> None:
            dist.all_reduce(leaf.grad, group=self.pg)
            flat = leaf.grad.div_(dist.get_world_size(self.pg)).view(-1)
            for table, offset in tables:
                table.grad = flat[offset:offset + table.numel()].view_as(table)
                by_param[id(table)].step()
                table.grad = None
            leaf.grad = None
        return step


@dataclass
class ShardingOptions:
    """What the user may constrain per table (config keys ``sharding_types``, ``compute_kernels``).

    Args:
        sharding_types: table name -> one of :data:`SHARDING_TYPES`.
        compute_kernels: table name -> one of :data:`COMPUTE_KERNELS`.
    """

    sharding_types: Dict[str, str] = field(default_factory=dict)
    compute_kernels: Dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config) -> "ShardingOptions":
        options = cls(dict(_mapping(config, "sharding_types")), dict(_mapping(config, "compute_kernels")))
        for table, kind in options.sharding_types.items():
            if kind not in SHARDING_TYPES:
                raise ConfigError(f"sharding_types: table '{table}' asks for '{kind}'; choose one of "
                                  f"{list(SHARDING_TYPES)}, e.g. sharding_types: {{{table}: row_wise}}.")
        for table, kernel in options.compute_kernels.items():
            if kernel not in COMPUTE_KERNELS:
                raise ConfigError(f"compute_kernels: table '{table}' asks for '{kernel}'; choose one of "
                                  f"{list(COMPUTE_KERNELS)}.")
            if kernel == "dense" and options.sharding_types.get(table, "data_parallel") != "data_parallel":
                raise ConfigError(f"compute_kernels: table '{table}' is 'dense', which TorchRec supports only "
                                  f"with data_parallel; set sharding_types: {{{table}: data_parallel}} or use 'fused'.")
        for table, kind in options.sharding_types.items():
            if kind == "data_parallel" and options.compute_kernels.get(table, "dense") != "dense":
                raise ConfigError(f"sharding_types: table '{table}' is data_parallel, which TorchRec runs only "
                                  f"with the dense kernel; drop compute_kernels for it or set it to dense.")
        return options

    def constraints(self, tables: List[str], unpooled: List[str], dims: Optional[Dict[str, int]] = None,
                    world_size: int = 1) -> Dict[str, ParameterConstraints]:
        """Planner constraints for ``tables`` (clear error for unknown names).

        Args:
            tables: every table name.
            unpooled: the tables of the unpooled collection (the item-id table), which TorchRec 1.8
                cannot run ``data_parallel`` (its lookup fails), so they never are.
            dims: embedding dimension of each table: a ``column_wise`` table is cut into
                ``world_size`` column blocks (TorchRec's default block is 128 columns, which
                would leave a 64-wide table in one piece).
            world_size: number of ranks.
        """
        unknown = sorted((set(self.sharding_types) | set(self.compute_kernels)) - set(tables))
        if unknown:
            raise ConfigError(f"sharding_types/compute_kernels name unknown tables {unknown}; the tables of "
                              f"this model are {sorted(tables)}.")
        constraints = {}
        for table in tables:
            kind = self.sharding_types.get(table)
            kernel = self.compute_kernels.get(table) or ("dense" if kind == "data_parallel" else None)
            if table in unpooled and (kind == "data_parallel" or kernel == "dense"):
                raise ConfigError(f"sharding_types: '{table}' is the unpooled item-id table, which TorchRec "
                                  "cannot replicate (data_parallel); choose table_wise, row_wise or column_wise.")
            kinds = [kind] if kind else (["table_wise", "row_wise", "column_wise"] if table in unpooled else None)
            if kinds or kernel:
                constraints[table] = ParameterConstraints(sharding_types=kinds,
                                                          compute_kernels=[kernel] if kernel else None)
            dim = (dims or {}).get(table, 0)
            if kind == "column_wise" and world_size > 1 and dim % world_size == 0 and (dim // world_size) % 4 == 0:
                constraints[table].min_partition = dim // world_size
        return constraints


def _mapping(config, key: str) -> Dict[str, str]:
    value = config[key] if key in config else None
    if value in (None, "", {}):
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must map table names to values, e.g. {key}: {{item_id: row_wise}}; "
                          f"got {value!r}.")
    return {str(k): str(v).lower() for k, v in value.items()}


def _meta_collections(item_configs, feature_configs) -> Tuple[EmbeddingCollection, Optional[EmbeddingBagCollection]]:
    meta = torch.device("meta")
    items = EmbeddingCollection(tables=list(item_configs), device=meta)
    features = EmbeddingBagCollection(tables=list(feature_configs), device=meta) if feature_configs else None
    return items, features


def plan_sharding(module: nn.Module, options: ShardingOptions, dims: Dict[str, int], unpooled: List[str],
                  device: torch.device, pg: dist.ProcessGroup, local_world_size: int) -> ShardingPlan:
    """TorchRec's plan for ``module`` (tables ``dims``: name -> dimension) on ``pg``, the same on every rank."""
    world_size = dist.get_world_size(pg)
    topology = Topology(world_size=world_size, compute_device=device.type, local_world_size=local_world_size)
    constraints = options.constraints(list(dims), unpooled, dims, world_size)
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    try:
        return planner.collective_plan(module, sharders(), pg)
    except Exception as e:  # the planner's message names no table
        if type(e).__name__ in ("PlannerError",):
            raise ConfigError(f"TorchRec's planner found no sharding for these constraints "
                              f"(sharding_types={options.sharding_types}, compute_kernels={options.compute_kernels}): "
                              f"{str(e).splitlines()[0]}") from None
        raise


def sharders() -> list:
    return [EmbeddingCollectionSharder(), CPURowWiseEmbeddingBagSharder()]


def describe_plan(plan: ShardingPlan) -> List[Dict[str, Any]]:
    """One row per table: ``table, sharding_type, compute_kernel, ranks`` (plain data, for logs)."""
    rows = []
    for module_path, module_plan in plan.plan.items():
        for table, ps in module_plan.items():
            rows.append({"table": table, "module": module_path, "sharding_type": ps.sharding_type,
                         "compute_kernel": ps.compute_kernel, "ranks": list(ps.ranks or [])})
    return sorted(rows, key=lambda r: r["table"])


def _local_shards(value) -> List[Tuple[List[int], torch.Tensor]]:
    """``[(offsets, tensor)]`` of this rank's part of a table or optimizer state."""
    if isinstance(value, ShardedTensor):
        return [(list(s.metadata.shard_offsets), s.tensor) for s in value.local_shards()]
    return [([0] * value.dim(), value)]  # replicated (data_parallel) or unsharded


def _full_size(value) -> List[int]:
    return list(value.size())


def _pad_stride(kjt: KeyedJaggedTensor, stride: int) -> KeyedJaggedTensor:
    """``kjt`` with empty rows appended up to batch size ``stride`` (same values)."""
    if kjt.stride() >= stride:
        return kjt
    lengths = kjt.lengths().view(len(kjt.keys()), -1)
    lengths = torch.cat([lengths, lengths.new_zeros(len(kjt.keys()), stride - lengths.shape[1])], dim=1)
    return KeyedJaggedTensor.from_lengths_sync(keys=kjt.keys(), values=kjt.values(), lengths=lengths.flatten())


class ShardedSparseArch(nn.Module):
    """A :class:`~recbole_mtl.embedding.sparse_arch.SparseArch` sharded by ``DistributedModelParallel``.

    The DMP is held outside the module tree: its tables are neither in ``state_dict()`` (they
    travel in :meth:`sparse_optimizer_state` as local shards) nor in ``parameters()`` (the dense
    optimizer and DDP never see them).

    Args:
        dmp: ``DistributedModelParallel`` over a SparseArch of plain collections.
        plan: the plan it was sharded with.
        replicated: the optimizer of its ``data_parallel`` tables, if any.
    """

    def __init__(self, dmp: DistributedModelParallel, plan: ShardingPlan,
                 replicated: Optional[_ReplicatedTableOptimizer] = None):
        super().__init__()
        self.__dict__["dmp"] = dmp  # not a submodule, on purpose (see the class docstring)
        self.plan_rows = describe_plan(plan)
        self.replicated = replicated

    def forward(self, item_kjt: KeyedJaggedTensor, feature_kjt: Optional[KeyedJaggedTensor]):
        # sharded lookups exchange per-row results: every rank must bring the same batch size
        # (a step's number of distinct items differs between ranks), so pad with empty rows
        strides = torch.tensor([item_kjt.stride(), feature_kjt.stride() if feature_kjt is not None else 0])
        dist.all_reduce(strides, op=dist.ReduceOp.MAX)
        items, pooled = self.dmp(_pad_stride(item_kjt, int(strides[0])),
                                 None if feature_kjt is None else _pad_stride(feature_kjt, int(strides[1])))
        return _wait(items), _wait(pooled)

    def train(self, mode: bool = True):
        super().train(mode)
        self.dmp.train(mode)
        return self

    # -- state ------------------------------------------------------------------------------
    def _table_state(self) -> Dict[str, Any]:
        return {k: v for k, v in self.dmp.state_dict().items() if k.endswith(".weight")}

    def sparse_optimizer_state(self) -> dict:
        """This rank's shards of every table and of its optimizer state, as plain tensors.

        Returns:
            ``{"rank", "world_size", "plan", "tables": {key: {"size", "shards": [(offsets, tensor)]}},
            "optimizer": {key: same}}`` with single-process table keys.
        """
        tables = {_strip(k): {"size": _full_size(v), "shards": [(o, t.detach().clone()) for o, t in _local_shards(v)]}
                  for k, v in self._table_state().items()}
        optimizer = {}
        for param_key, state in self.dmp.fused_optimizer.state_dict()["state"].items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    optimizer[f"{_strip(param_key)}::{name}"] = {
                        "size": _full_size(value),
                        "shards": [(o, t.detach().clone()) for o, t in _local_shards(value)]}
        replicated = {}
        if self.replicated is not None:
            for name, opt in self.replicated.optimizers.items():
                (leaf,) = opt.param_groups[0]["params"]
                replicated[name] = {k: v.detach().clone() if isinstance(v, torch.Tensor) else v
                                    for k, v in opt.state.get(leaf, {}).items()}
        return {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "plan": self.plan_rows,
                "tables": tables, "optimizer": optimizer, "replicated_optimizer": replicated}

    def load_sparse_optimizer_state(self, state: Optional[dict]) -> None:
        """Copy a rank's saved shards back (same world size and plan), or full single-process tables."""
        if not state:
            return
        if "tables" not in state:  # a single-process checkpoint's optimizer state: not transferable
            getLogger().warning("single-process table optimizer state is not loaded into sharded tables; "
                                "the tables' optimizer restarts from zero accumulators")
            return
        if state["world_size"] != dist.get_world_size() or state["plan"] != self.plan_rows:
            raise ConfigError(
                f"this sharded checkpoint was written by {state['world_size']} processes with plan "
                f"{state['plan']}; this run has {dist.get_world_size()} processes with plan {self.plan_rows}. "
                "Resume with the same --nproc and sharding settings, or export it to a single-process "
                "checkpoint (run_recbole_mtl.py export --checkpoint=...) and start from that."
            )
        current = self._table_state()
        for key, saved in state["tables"].items():
            _copy_shards(current[_full_key(current, key)], saved["shards"], key)
        optim_state = self.dmp.fused_optimizer.state_dict()["state"]
        for param_key, entries in optim_state.items():
            for name, value in entries.items():
                saved = state["optimizer"].get(f"{_strip(param_key)}::{name}")
                if isinstance(value, torch.Tensor) and saved is not None:
                    _copy_shards(value, saved["shards"], f"{param_key}::{name}")
        if self.replicated is not None:
            for name, opt in self.replicated.optimizers.items():
                (leaf,) = opt.param_groups[0]["params"]
                saved = state.get("replicated_optimizer", {}).get(name)
                if saved:
                    opt.state[leaf] = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in saved.items()}

    def init_tables(self, seed: int) -> None:
        """Fill every local shard with its rows' initial values (those of the whole table in one process)."""
        for key, value in self._table_state().items():
            rows, dim = _full_size(value)
            name = _strip(key).split(".")[-2]
            for offsets, tensor in _local_shards(value):
                fill_rows(tensor, name, rows, seed, row_offset=offsets[0], col_offset=offsets[1], dim=dim)

    def load_full_tables(self, full: Dict[str, torch.Tensor]) -> None:
        """Give every local shard its slice of the full tables ``full`` (single-process keys)."""
        current = self._table_state()
        for key, value in current.items():
            table = full[_strip(key)]
            for offsets, tensor in _local_shards(value):
                index = tuple(slice(o, o + n) for o, n in zip(offsets, tensor.shape))
                with torch.no_grad():
                    tensor.copy_(table[index])


def _wait(value):
    """Resolve TorchRec's lazy awaitables (sharded outputs) into tensors."""
    return value.wait() if isinstance(value, LazyAwaitable) else value


def _strip(key: str) -> str:
    """DMP/DDP state keys -> the single-process SparseArch keys."""
    for prefix in ("_dmp_wrapped_module.", "module."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _full_key(current: Dict[str, Any], key: str) -> str:
    for k in current:
        if _strip(k) == key:
            return k
    raise ConfigError(f"the checkpoint holds table '{key}', which this model does not have; tables here: "
                      f"{sorted(_strip(k) for k in current)}")


def _copy_shards(target, saved: List[Tuple[List[int], torch.Tensor]], name: str) -> None:
    local = _local_shards(target)
    if [o for o, _ in local] != [list(o) for o, _ in saved] or any(
            t.shape != s.shape for (_, t), (_, s) in zip(local, saved)):
        raise ConfigError(f"checkpoint shards of '{name}' do not match this rank's shards "
                          f"(saved offsets {[o for o, _ in saved]}, here {[o for o, _ in local]}).")
    with torch.no_grad():
        for (_, tensor), (_, value) in zip(local, saved):
            tensor.copy_(value)


def shard_sparse_arch(arch_type: type, item_configs, feature_configs, optimizer_type, optimizer_kwargs: Dict[str, Any],
                      options: ShardingOptions, device: torch.device, pg: dist.ProcessGroup,
                      local_world_size: int, seed: int) -> ShardedSparseArch:
    """The sparse arch of ``item_configs`` / ``feature_configs``, born sharded over ``pg``.

    No rank ever holds a whole table it does not own: the arch is described on the ``meta``
    device, planned, and ``DistributedModelParallel`` allocates each rank's shards; every shard
    is then filled with the row-keyed initial values (:mod:`recbole_mtl.embedding.init`), so the
    tables start as one process's would, whatever the world size.

    Args:
        arch_type: the single-process arch class (:class:`~recbole_mtl.embedding.sparse_arch.SparseArch`).
        item_configs: the unpooled collection's ``EmbeddingConfig`` (the item-id table).
        feature_configs: the pooled collection's ``EmbeddingBagConfig`` list (may be empty).
        optimizer_type, optimizer_kwargs: the fused optimizer of every table.
        options: the user's per-table constraints.
        device: ``cpu`` (gloo, FBGEMM CPU kernels) or ``cuda:<local rank>`` (NCCL, CUDA kernels).
        pg: the process group.
        local_world_size: processes per node (for the planner's topology).
        seed: the run's seed (initial values).
    """
    # planning and sharding draw random numbers (TorchRec's own table init); keep the model's stream
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        items, features = _meta_collections(item_configs, feature_configs)
        module = arch_type(items, features)
        apply_optimizer_in_backward(optimizer_type, module.parameters(), dict(optimizer_kwargs))  # it adds keys
        dims = {c.name: c.embedding_dim for c in list(item_configs) + list(feature_configs)}
        plan = plan_sharding(module, options, dims, [c.name for c in item_configs], device, pg, local_world_size)
        dmp = DistributedModelParallel(module, env=ShardingEnv.from_process_group(pg), device=device, plan=plan,
                                       sharders=sharders())
        replicated = {_strip(n): p for n, p in dmp.named_parameters()
                      if any(row["sharding_type"] == "data_parallel" and n.endswith(f".{row['table']}.weight")
                             for row in describe_plan(plan))}
    arch = ShardedSparseArch(dmp, plan, _ReplicatedTableOptimizer(replicated, optimizer_type, optimizer_kwargs, pg))
    arch.init_tables(seed)
    logger = getLogger()
    for row in arch.plan_rows:
        logger.info(f"sharding plan: table {row['table']} -> {row['sharding_type']}, {row['compute_kernel']} "
                    f"kernel, ranks {row['ranks']}")
    return arch
