"""``benchmark --tune N``: the same tuning budget for every model (Optuna, TPE, median pruning).

* **Search space**: ``properties/search/<Model>.yaml`` (``default.yaml`` for a model without its
  own file), one parameter a line: ``name: {type: float|int|categorical, low, high, log, step,
  choices}``; a dotted name (``task_weights.interest``) sets one entry of a dict-valued key, the
  other entries keep the model's defaults. :func:`load_space` checks the file and names the
  file, line and field of any mistake.
* **Study**: one per model spec in ``<out>/tuning.db`` (SQLite), named
  ``<dataset>/<spec>/<digest of the space>``: a changed space starts a new study instead of mixing
  its trials with the old ones. Trials are sampled by TPE seeded with ``seed + trials so far`` and
  pruned by the median rule on the per-epoch validation metric.
* **Resume**: a trial left ``RUNNING`` by a killed process is marked failed and its parameters are
  queued again; completed and pruned trials are kept, so a rerun goes on until ``N`` trials count.

Each trial runs in its own process (as every benchmark run); :class:`TrialReporter` is its end of
the study: it reports the validation metric after each evaluation and raises
``optuna.TrialPruned`` when the pruner says so.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from recbole_mtl.config import properties_dir
from recbole_mtl.errors import ConfigError

SPEC_FIELDS = ("type", "low", "high", "log", "step", "choices")
TYPES = ("float", "int", "categorical")
STUDY_FILE = "tuning.db"
#: user attribute of a trial whose process was killed (queued again, not counted)
INTERRUPTED = "interrupted"
#: user attribute of a trial whose run failed with an error (counted: the same parameters would fail again)
ERROR = "error"


@dataclass(frozen=True)
class Param:
    """One searched parameter."""

    name: str
    type: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[tuple] = None

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)


@dataclass(frozen=True)
class SearchSpace:
    """The parameters searched for one model, read from :attr:`path`."""

    path: Path
    params: tuple

    @property
    def digest(self) -> str:
        """8 hex digits of the parameters' definitions (not of comments or order)."""
        text = json.dumps(sorted([p.__dict__ for p in self.params], key=lambda d: d["name"]), sort_keys=True,
                          default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def distributions(self) -> dict:
        return {p.name: p.distribution() for p in self.params}

    def overrides(self, values: dict, defaults: dict) -> dict:
        """Config keys of sampled ``values``: dotted names merged into ``defaults``' dict of that key."""
        out: dict = {}
        for name, value in values.items():
            key, _, entry = name.partition(".")
            if entry:
                merged = out.setdefault(key, dict(defaults.get(key) or {}))
                merged[entry] = value
            else:
                out[key] = value
        return out


def space_path(model: str) -> Path:
    """``properties/search/<model>.yaml``, else ``properties/search/default.yaml``."""
    folder = properties_dir() / "search"
    own = folder / f"{model}.yaml"
    return own if own.is_file() else folder / "default.yaml"


def load_space(path: Path) -> SearchSpace:
    """Read and check a search-space file; errors say file, line and field, and how to fix it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text)
    except OSError as e:
        raise ConfigError(f"search space {path}: cannot read it ({e}).") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"search space {path}: not valid YAML: {e}") from None
    if root is None or not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{path}: a search space is a mapping `name: {{type: ..., ...}}`, one parameter a line "
                          "(see properties/search/default.yaml).")
    params = []
    for key_node, value_node in root.value:
        name, line = key_node.value, key_node.start_mark.line + 1
        where = f"{path}:{line}: parameter '{name}'"
        value = yaml.safe_load(yaml.serialize(value_node))
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping such as {{type: float, low: 0.0, high: 0.5}}, got "
                              f"{value!r}.")
        unknown = sorted(set(value) - set(SPEC_FIELDS))
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}; the fields are {list(SPEC_FIELDS)}.")
        kind = value.get("type")
        if kind not in TYPES:
            raise ConfigError(f"{where}: field 'type' is {kind!r}; choose one of {list(TYPES)}.")
        params.append(_check_param(name, kind, value, where))
    if not params:
        raise ConfigError(f"{path}: the search space is empty; add at least one parameter.")
    return SearchSpace(path, tuple(params))


def _check_param(name: str, kind: str, value: dict, where: str) -> Param:
    if kind == "categorical":
        choices = value.get("choices")
        extra = sorted(set(value) - {"type", "choices"})
        if extra:
            raise ConfigError(f"{where}: field(s) {extra} do not apply to a categorical parameter; keep 'choices'.")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: field 'choices' must be a non-empty list, e.g. choices: [32, 64].")
        return Param(name, kind, choices=tuple(choices))
    if "choices" in value:
        raise ConfigError(f"{where}: field 'choices' applies to type: categorical only.")
    for field in ("low", "high"):
        if not isinstance(value.get(field), (int, float)) or isinstance(value.get(field), bool):
            raise ConfigError(f"{where}: field '{field}' must be a number (got {value.get(field)!r}).")
    low, high, log, step = value["low"], value["high"], bool(value.get("log", False)), value.get("step")
    if not low < high:
        raise ConfigError(f"{where}: bad range: low ({low}) must be below high ({high}).")
    if log and low <= 0:
        raise ConfigError(f"{where}: bad range: log: true needs low > 0 (got low {low}).")
    if step is not None and (log or not isinstance(step, (int, float)) or step <= 0):
        raise ConfigError(f"{where}: field 'step' must be a positive number and cannot go with log: true.")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"{where}: type: int needs whole-number low and high (got {low}, {high}).")
    return Param(name, kind, low, high, log, step)


# -- studies ---------------------------------------------------------------------------------------
def study_name(dataset: str, spec: str, space: SearchSpace, conditions: Optional[dict] = None) -> str:
    """``<dataset>/<spec>/<digest>``: the digest covers the space and the trials' ``conditions``
    (epochs, patience, sequence length, protocol, overrides), so trials run under other settings
    are never mixed in."""
    digest = space.digest
    if conditions:
        text = json.dumps(conditions, sort_keys=True, default=str)
        digest = hashlib.sha256((digest + text).encode()).hexdigest()[:8]
    return f"{dataset}/{spec}/{digest}"


def storage_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


#: Seconds a process waits for the study file while another writes it (``benchmark --jobs``: the
#: benchmark and its trials' processes share one SQLite file).
SQLITE_TIMEOUT_S = 300


def storage(url: str):
    """Optuna's ``RDBStorage`` on ``url``, waiting for SQLite's lock instead of failing at once."""
    import optuna

    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})


#: Epochs a trial always trains before the median rule may stop it (a slower start, e.g. a lower
#: learning rate, is not judged on its first epochs).
PRUNE_WARMUP_EPOCHS = 2


def pruner(warmup_trials: int = 2, warmup_epochs: int = PRUNE_WARMUP_EPOCHS):
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=warmup_trials, n_warmup_steps=warmup_epochs)


def open_study(path: Path, name: str, maximize: bool, seed: int):
    """Create or load study ``name`` in the SQLite file ``path``; TPE seeded by ``seed`` and the
    number of trials already there (a resumed run does not redraw the first run's trials)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=storage(storage_url(path)), load_if_exists=True,
                                direction="maximize" if maximize else "minimize", pruner=pruner())
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=5)
    return study


def recover(study) -> int:
    """Mark trials a killed process left ``RUNNING`` as failed and queue their parameters again."""
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
    return len(stale)


def counted(study) -> list:
    """Trials that count towards ``--tune N``: complete, pruned, or failed with an error."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and ERROR in t.user_attrs)]


def best_params(study) -> Optional[dict]:
    from optuna.trial import TrialState

    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return None
    return dict(study.best_trial.params)


def model_defaults(model: str) -> dict:
    """The model's plugin YAML defaults (and its family's), for merging dotted parameters."""
    folder = properties_dir() / "model"
    out: dict = {}
    try:
        from recbole_mtl.utils import get_model

        base = getattr(get_model(model), "properties_base", None)
    except Exception:  # noqa: BLE001 - CategoryMLP and unknown names have no family
        base = None
    for name in (base, model):
        file = folder / f"{name}.yaml" if name else None
        if file is not None and file.is_file():
            out.update(yaml.safe_load(file.read_text(encoding="utf-8")) or {})
    return out


class TrialReporter:
    """The trial's end inside its run's process: report each validation score, prune if told.

    Args:
        tune: ``{"storage": url, "study": name, "trial_id": id}`` from the benchmark's process.
    """

    def __init__(self, tune: dict):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=tune["study"], storage=storage(tune["storage"]), pruner=pruner())
        self.trial = optuna.trial.Trial(study, int(tune["trial_id"]))

    def report(self, epoch_idx: int, valid_score: float) -> None:
        import optuna

        if not math.isfinite(float(valid_score)):
            return
        self.trial.report(float(valid_score), int(epoch_idx))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch_idx} (validation {valid_score:.4f})")


def describe(params: dict[str, Any]) -> str:
    """``lr=0.0012, dropout=0.21`` for tables."""
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    return ", ".join(f"{k}={fmt(v)}" for k, v in sorted(params.items()))
