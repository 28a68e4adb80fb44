"""The benchmark's scheduler: tuning trials and final runs as jobs, ``--jobs`` processes at a
time, each study and ``runs.csv`` updated as each run ends, so a rerun resumes where it stopped."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from recbole_mtl.benchmark.runs import _key, read_runs, select, write_runs
from recbole_mtl.benchmark.specs import SMALLER, TASK_METRICS, VALID_METRIC, ModelSpec, _item_tasks
from recbole_mtl.benchmark.worker import _run_one, run_config
from recbole_mtl.checkpoint import atomic_open
from recbole_mtl.errors import RunFailedError
from recbole_mtl.trainer import MTL_GAIN

#: User attribute of a completed tuning trial: its result (test metrics included), so the best
#: trial stands as the first seed's final run.
TRIAL_RESULT = "result"


def _label(spec: ModelSpec, seed: int, fold: int, lr: float, params: str) -> str:
    tag = f"-p{hashlib.sha256(params.encode()).hexdigest()[:8]}" if params else ""
    return f"{spec.text.replace(':', '_').replace('@', '_').replace('+', '_')}-s{seed}-f{fold}-lr{lr:g}{tag}"


@dataclass
class _Job:
    """One run of the benchmark: a tuning trial (``trial`` set) or a final run (``key`` set)."""

    spec: ModelSpec
    name: str
    config: dict
    log: Path
    extra: dict
    trial: object = None
    key: tuple = ()
    started: float = 0.0


class _Runner:
    """Runs the benchmark's runs, ``args.jobs`` processes at a time, in the order of ``--models``.

    For each model: its tuning trials (``--tune N``), then, once its study is done, its final runs
    (every seed with the best configuration; the grid of ``--lr_grid`` without tuning). The best
    trial already is seed ``--seed``'s final run (same configuration, same seed; it was tested and
    kept its per-user values), so that run is taken from the trial, not trained again. A free process
    moves on to the next model while a model's last trials finish. Every study and ``runs.csv``
    update happens in this process, as each run ends, so a killed benchmark loses only the runs
    that were in flight."""

    def __init__(self, specs: list[ModelSpec], args: argparse.Namespace, base: dict, out: Path):
        self.specs, self.args, self.base, self.out = specs, args, base, out
        self.runs_csv = out / "runs.csv"
        self.rows = read_runs(self.runs_csv)
        self.done = {_key(r) for r in self.rows}
        self.studies: dict = {}   # spec text -> summary of its finished study
        self._tuning: dict = {}   # spec text -> {"study", "name", "space", "defaults", "distributions", "running"}
        self._started: set = set()
        self._failure: Optional[BaseException] = None
        self.recorded = 0  # final runs recorded by this process (trained, or taken from their best trial)
        self.trials = 0    # tuning trials run by this process

    # -- what to run ----------------------------------------------------------------------------
    def plan(self, spec: ModelSpec) -> list[tuple]:
        """The final runs of ``spec``: (spec, seed, fold, learning rate, tuned params as JSON)."""
        args = self.args
        study = self.studies.get(spec.text, {})
        tuned = study.get("params")
        folds = range(args.folds) if _item_tasks(spec) and args.folds > 1 else [0]
        lrs = [float(tuned.get("learning_rate", args.lrs[0]))] if tuned is not None else args.lrs
        # the objective's keys too: the same configuration stopped early on another metric is another run
        params = json.dumps({**tuned, **study.get("objective_config", {})}, sort_keys=True) if tuned is not None else ""
        return [(spec, seed, fold, lr, params) for seed in args.seed_list for fold in folds for lr in lrs]

    def _next(self) -> Optional[_Job]:
        from recbole_mtl import tuning

        closed = True
        while closed:  # a study closed in this pass may let an earlier spec (waiting for it) start
            closed = False
            for spec in self.specs:
                if self.args.tune and spec.text not in self.studies:
                    state = self._open(spec)
                    if state is None:
                        continue  # its mtl_gain references are still being tuned
                    if len(tuning.counted(state["study"])) + state["running"] < self.args.tune:
                        return self._trial_job(spec, state)
                    if state["running"]:
                        continue  # its final runs wait for its last trials
                    self.studies[spec.text] = self._close(spec, state)
                    closed = True
                for key in self.plan(spec):
                    k = (key[0].text, *key[1:])
                    if k not in self.done and k not in self._started:
                        self._started.add(k)
                        return self._final_job(key)
        return None

    def _objective(self, spec: ModelSpec) -> Optional[dict]:
        """The validation keys of a multi-task spec tuned on ``mtl_gain`` (``{}`` for the others);
        ``None`` while a reference's study is still open."""
        if not (spec.multi_task and self.args.tune_objective == "mtl_gain"):
            return {}
        reference = {}
        for ref, task in zip(spec.gain_references(), spec.tasks):
            if ref not in self.studies:
                return None
            reference[VALID_METRIC[task]] = round(float(self.studies[ref]["best_value"]), 6)
        return {"valid_metric": MTL_GAIN, "mtl_gain_reference": reference}

    def _open(self, spec: ModelSpec) -> Optional[dict]:
        """The spec's study state (created or loaded); ``None`` while its objective waits for references."""
        from recbole_mtl import tuning

        if spec.text in self._tuning:
            return self._tuning[spec.text]
        objective = self._objective(spec)
        if objective is None:
            return None
        space = tuning.load_space(tuning.space_path(spec.model.split("+")[0]))
        conditions = {k: self.base.get(k) for k in ("epochs", "stopping_step", "max_len", "protocol", "overrides",
                                                     "label_field", "label_threshold")}
        if objective:
            conditions["objective"] = objective  # new references (a re-tuned ablation): a new study
        name = tuning.study_name(self.args.dataset, spec.text, space, conditions)
        path = self.out / tuning.STUDY_FILE
        metric = objective.get("valid_metric", spec.valid_metric)
        study = tuning.open_study(path, name, metric.lower() not in SMALLER, self.args.seed)
        requeued = tuning.recover(study)
        print(f"tune {spec.text}: study '{name}' in {path}: {len(tuning.counted(study))} of {self.args.tune} trials "
              "done" + (f", {requeued} interrupted trial(s) queued again" if requeued else "")
              + (f"; objective {MTL_GAIN} over {objective['mtl_gain_reference']}" if objective else ""), flush=True)
        # a spec that names its balancing method (MMoE:pcgrad) keeps it
        distributions = {k: d for k, d in space.distributions().items() if not (spec.balance and k == "loss_balance")}
        state = {"study": study, "name": name, "space": space, "defaults": tuning.model_defaults(spec.model),
                 "distributions": distributions, "running": 0, "path": path, "objective": objective}
        self._tuning[spec.text] = state
        return state

    def _trial_job(self, spec: ModelSpec, state: dict) -> _Job:
        from recbole_mtl import tuning

        trial = state["study"].ask(state["distributions"])
        state["running"] += 1
        params = state["space"].overrides(trial.params, state["defaults"])
        config = run_config(spec, self.args.seed_list[0], 0, 1, float(params.get("learning_rate", self.args.lrs[0])),
                            self.base, {**params, **state["objective"]})
        name = self._trial_name(spec, trial.number)
        logs = self.out / "logs" / "tuning"
        config["checkpoint_dir"] = str(self.out / "checkpoints" / "tuning" / name)
        extra = {"tune": {"storage": tuning.storage_url(state["path"]), "study": state["name"],
                          "trial_id": trial._trial_id},
                 "per_user": str(logs / f"{name}.npz")}
        return _Job(spec, name, config, logs / f"{name}.log", extra, trial=trial)

    def _trial_name(self, spec: ModelSpec, number: int) -> str:
        """The name of a trial's log, per-user file and checkpoint folder (with its study's digest:
        trial N of another study of the model, e.g. under another objective, has its own files)."""
        digest = self._tuning[spec.text]["name"].rsplit("/", 1)[-1]
        return f"{_label(spec, self.args.seed_list[0], 0, 0, '')}-{digest}-t{number}"

    def _final_job(self, key: tuple) -> _Job:
        spec, seed, fold, lr, params = key
        args = self.args
        config = run_config(spec, seed, fold, args.folds if _item_tasks(spec) else 1, lr, self.base,
                            json.loads(params) if params else None)
        name = _label(spec, seed, fold, lr, params)
        config["checkpoint_dir"] = str(self.out / "checkpoints" / name)
        return _Job(spec, name, config, self.out / "logs" / f"{name}.log",
                    {"per_user": str(self.out / "per_user" / f"{name}.npz")}, key=key)

    def _close(self, spec: ModelSpec, state: dict) -> dict:
        """The study's summary; the best trial becomes seed ``--seed``'s final run when it can."""
        from recbole_mtl import tuning

        study, space = state["study"], state["space"]
        best = tuning.best_params(study)
        if best is None:
            raise RunFailedError(f"tuning {spec.text}: no trial of study '{state['name']}' completed (see the logs "
                                 f"under {self.out / 'logs' / 'tuning'}); check the search space {space.path}.")
        trials = study.get_trials(deepcopy=False)
        states = [t.state.name for t in trials]
        failed = [t for t in trials if t.state.name == "FAIL"]
        params = space.overrides(best, state["defaults"])
        objective = state["objective"]
        summary = {"study": state["name"], "space": str(space.path), "params": params, "best": best,
                   "best_value": float(study.best_value), "complete": states.count("COMPLETE"),
                   "pruned": states.count("PRUNED"), "failed": sum(tuning.ERROR in t.user_attrs for t in failed),  # as tuning.counted counts them
                   "interrupted": sum(bool(t.user_attrs.get(tuning.INTERRUPTED)) for t in failed),
                   "trial": study.best_trial.number,
                   "objective": objective.get("valid_metric", spec.valid_metric),
                   "reference": objective.get("mtl_gain_reference"), "objective_config": objective}
        self.studies[spec.text] = summary
        self._drop_superseded(spec)
        self._adopt_best_trial(spec, study.best_trial)
        return summary

    def _drop_superseded(self, spec: ModelSpec) -> None:
        """Remove from ``runs.csv`` (and ``per_user/``) the final runs of ``spec`` made with another
        configuration than its study's best (an earlier study, e.g. under another objective)."""
        params = {key[4] for key in self.plan(spec)}
        stale = [r for r in self.rows if r["model"] == spec.text and (r.get("params") or "") not in params]
        if not stale:
            return
        for row in stale:
            self.rows.remove(row)
            self.done.discard(_key(row))
            if row.get("per_user"):
                (self.out / row["per_user"]).unlink(missing_ok=True)
        write_runs(self.runs_csv, select(self.rows))
        print(f"  {spec.text}: {len(stale)} final run(s) of an earlier configuration removed from {self.runs_csv}",
              flush=True)

    def _adopt_best_trial(self, spec: ModelSpec, trial) -> None:
        """Record the best trial as seed ``--seed``'s final run (fold 0) if it holds a tested result
        and the final run would have the same configuration (one fold)."""
        result = trial.user_attrs.get(TRIAL_RESULT)
        key = next((k for k in self.plan(spec) if k[1] == self.args.seed_list[0] and k[2] == 0), None)
        if not result or not result.get("test") or key is None or (_item_tasks(spec) and self.args.folds > 1):
            return
        k = (key[0].text, *key[1:])
        if k in self.done:
            return
        name = _label(*key)
        source = self.out / "logs" / "tuning" / f"{self._trial_name(spec, trial.number)}.npz"
        per_user = Path("per_user") / f"{name}.npz"
        if source.is_file():
            (self.out / per_user).parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(self.out / per_user, "wb") as f:
                f.write(source.read_bytes())
        elif result.get("per_user_written"):
            return  # its per-user values are gone (another machine's logs): train the run again
        self._record(key, self._final_job(key).config, result, per_user if (self.out / per_user).is_file() else None,
                     trial=trial.number)
        print(f"  {spec.text} seed={key[1]}: the best trial ({trial.number}) is this run "
              f"({TASK_METRICS[spec.tasks[0]][0]} {result['test'].get(TASK_METRICS[spec.tasks[0]][0], float('nan')):.4f})",
              flush=True)

    # -- running ----------------------------------------------------------------------------------
    def run(self) -> dict:
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        running: dict = {}
        with ThreadPoolExecutor(max_workers=self.args.jobs) as pool:
            while True:
                while len(running) < self.args.jobs and self._failure is None:
                    try:
                        job = self._next()
                    except Exception as e:  # noqa: BLE001 - runs in flight are recorded first
                        self._failure = e
                        break
                    if job is None:
                        break
                    job.started = time.perf_counter()
                    what = f"trial {job.trial.number}" if job.trial is not None else \
                        f"seed={job.key[1]}" + (f" fold={job.key[2]}" if self.args.folds > 1 else "") + \
                        f" lr={job.key[3]:g}" + (" (tuned)" if job.key[4] else "")
                    print(f"start {job.spec.text} {what}: log {job.log}", flush=True)
                    running[pool.submit(_run_one, job.spec, self.args.dataset, job.config, job.log,
                                        self.args.timeout, job.extra)] = job
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = running.pop(future)
                    if job.trial is not None:
                        self._trial_ended(job, future)
                    else:
                        self._final_ended(job, future)
        if self._failure is not None:
            raise self._failure
        return self.studies

    def _trial_ended(self, job: _Job, future) -> None:
        from recbole_mtl import tuning

        state = self._tuning[job.spec.text]
        state["running"] -= 1
        self.trials += 1
        study, trial = state["study"], job.trial
        seconds = time.perf_counter() - job.started
        try:
            result = future.result()
        except (RunFailedError, subprocess.TimeoutExpired) as e:
            trial.set_user_attr(tuning.ERROR, str(e)[:500])
            study.tell(trial, state=optuna_state("FAIL"))
            print(f"  {job.spec.text} trial {trial.number} failed ({type(e).__name__}); log: {job.log}", flush=True)
            return
        if "pruned" in result:
            study.tell(trial, state=optuna_state("PRUNED"))
            outcome = "pruned"
        else:
            kept = {k: result.get(k) for k in ("test", "valid_score", "epochs_run", "best_epoch", "epoch_cap",
                                              "hit_cap", "hit_budget", "time_per_epoch_s", "train_time_s", "peak_rss_mb", "split",
                                              "curve")}
            kept["per_user_written"] = Path(job.extra["per_user"]).is_file()
            trial.set_user_attr(TRIAL_RESULT, kept)
            study.tell(trial, float(result["valid_score"]))
            outcome = f"{job.config.get('valid_metric', job.spec.valid_metric)} {float(result['valid_score']):.4f}"
        print(f"  {job.spec.text} trial {trial.number}: {tuning.describe(trial.params)}: {outcome} ({seconds:.0f} s)",
              flush=True)

    def _final_ended(self, job: _Job, future) -> None:
        try:
            result = future.result()
        except Exception as e:  # noqa: BLE001 - the others in flight are still recorded
            self._failure = self._failure or e
            return
        per_user = Path("per_user") / f"{job.name}.npz"
        self._record(job.key, job.config, result, per_user if (self.out / per_user).exists() else None)
        main_metric = TASK_METRICS[job.spec.tasks[0]][0]
        print(f"  {job.spec.text} seed={job.key[1]} done in {time.perf_counter() - job.started:.0f} s "
              f"({main_metric} {result['test'].get(main_metric, float('nan')):.4f})", flush=True)

    def _record(self, key: tuple, config: dict, result: dict, per_user: Optional[Path], trial=None) -> None:
        spec, seed, fold, lr, params = key
        row = {"model": spec.text, "seed": seed, "fold": fold, "learning_rate": lr, "params": params,
               "tasks": "+".join(spec.tasks), "selected": 0, "protocol": self.args.protocol,
               "valid_metric": config.get("valid_metric", spec.valid_metric),
               "per_user": per_user.as_posix() if per_user else "", "trial": "" if trial is None else trial,
               **{k: result.get(k, "") for k in ("valid_score", "epochs_run", "best_epoch", "epoch_cap", "hit_cap",
                                                "hit_budget", "time_per_epoch_s", "train_time_s", "peak_rss_mb", "split", "curve")},
               **result["test"]}
        self.rows.append(row)
        self.done.add(_key(row))
        self.recorded += 1
        write_runs(self.runs_csv, select(self.rows))


def optuna_state(name: str):
    from optuna.trial import TrialState

    return TrialState[name]
