"""One training process for tests/test_distributed.py: run alone (1 process) or under torchrun.

    python tests/distributed_worker.py SPEC.json OUT_DIR
    torchrun --nproc_per_node=2 tests/distributed_worker.py SPEC.json OUT_DIR

SPEC holds ``base`` (a config dict) and ``variants`` (name -> config overrides, plus optional
``resume_from``: a variant whose checkpoint this one resumes, or ``resume_path``: a checkpoint
file). For each variant, in order, the real pipeline runs (Config, RecBole data, MTLRec,
MultiTaskTrainer.fit, evaluate) and rank 0 writes ``OUT_DIR/<variant>.pth`` with the per-epoch
training losses, the test result, the sharding plan, the full tables before and after training
(joined from every rank's shards) and the checkpoint path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import recbole_mtl  # noqa: E402,F401
from recbole.utils import init_logger  # noqa: E402

from recbole_mtl import distributed  # noqa: E402
from recbole_mtl.config import Config  # noqa: E402
from recbole_mtl.checkpoint import merge_shards  # noqa: E402
from recbole_mtl.pipeline import build  # noqa: E402


def full_tables(model) -> tuple[dict, list]:
    """Every table of ``model`` in full (on rank 0) and the sharding plan (empty in one process)."""
    sparse = model.sparse
    if not hasattr(sparse, "plan_rows"):
        return {k: v.detach().clone() for k, v in sparse.state_dict().items() if k.endswith(".weight")}, []
    states = [None] * distributed.world_size()
    torch.distributed.all_gather_object(states, sparse.sparse_optimizer_state())
    return merge_shards(states), sparse.plan_rows


def run_variant(name: str, base: dict, overrides: dict, saved_paths: dict, out: Path) -> None:
    overrides = dict(overrides)
    resume_from = overrides.pop("resume_from", None)
    if "resume_path" in overrides:  # a checkpoint written elsewhere (e.g. by one process)
        resume_from = overrides.pop("resume_path")
        saved_paths[resume_from] = resume_from
    config_dict = {**base, **overrides, "checkpoint_dir": str(out / "saved" / name)}
    config = Config(model="MTLRec", dataset=base["dataset"], config_dict=config_dict, cmd_args=[])
    distributed.init_from_env(config)
    init_logger(config)
    built = build(config)
    train_data, valid_data, test_data, model, trainer = (built.train_data, built.valid_data, built.test_data,
                                                         built.model, built.trainer)
    if resume_from:
        trainer.resume_checkpoint(saved_paths[resume_from])
    initial_tables, _ = full_tables(model)
    trainer.fit(train_data, valid_data, saved=True, verbose=False)
    saved_paths[name] = trainer.saved_model_file
    test_result = trainer.evaluate(test_data, load_best_model=False)
    model.eval()
    with torch.no_grad():  # every rank takes part in the (collective) lookups
        scores = {k: v.detach().clone() for k, v in model.predict_tasks(next(iter(test_data))[0]).items()}
    tables, plan = full_tables(model)
    distributed.barrier()
    if distributed.rank() == 0:
        torch.save({"losses": {int(k): float(v) for k, v in trainer.train_loss_dict.items()},
                    "test_result": {k: float(v) for k, v in test_result.items()}, "plan": plan, "tables": tables,
                    "initial_tables": initial_tables, "first_test_batch_scores": scores,
                    "checkpoint": trainer.saved_model_file, "world_size": distributed.world_size(),
                    "n_train": len(trainer.training_loader(train_data).windows)},  # training windows
                   out / f"{name}.pth")
    distributed.barrier()


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    saved_paths: dict = {}
    for name, overrides in spec["variants"].items():
        run_variant(name, spec["base"], overrides, saved_paths, out)


if __name__ == "__main__":
    main()
