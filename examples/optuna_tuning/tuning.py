"""Optuna hyperparameter tuning on a dynamic pipeline.

Optuna decides which hyperparameters to try next (ask/tell); unspool runs the trials as
steps fanned out with ``.map``, records their metrics, caches them and keeps the best
parameters and the retrained best model as versioned artifacts.

    unspool run examples/optuna_tuning/tuning.py:optuna_tuning --param mode=adaptive
    unspool run examples/optuna_tuning/tuning.py:optuna_tuning --config examples/optuna_tuning/config.yaml
"""

from __future__ import annotations

import math
from typing import Annotated, Any, TypedDict

import numpy as np
import optuna
from optuna.trial import TrialState
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from unspool import (
    ArtifactConfig,
    ArtifactFuture,
    StepFailedError,
    log_metadata,
    pipeline,
    step,
    unmapped,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

# name -> {"type": "float" | "int" | "categorical", "low", "high", "log", "choices"}
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "alpha": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
    "penalty": {"type": "categorical", "choices": ["l2", "l1", "elasticnet"]},
    "learning_rate": {"type": "categorical", "choices": ["optimal", "constant", "adaptive"]},
    "eta0": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
}


class TrialRecord(TypedDict):
    """What a trial step stores: enough to rebuild the study from artifacts."""

    number: int
    params: dict[str, Any]
    state: str  # "complete" | "pruned" | "fail"
    value: float | None  # validation accuracy; None: no metric, never the best
    intermediate: dict[str, float]  # epoch -> accuracy (JSON keys are strings)


Dataset = dict[str, np.ndarray]


def distributions(space: dict[str, dict[str, Any]]) -> dict[str, optuna.distributions.BaseDistribution]:
    dists: dict[str, optuna.distributions.BaseDistribution] = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "float":
            dists[name] = optuna.distributions.FloatDistribution(spec["low"], spec["high"], log=spec.get("log", False))
        elif kind == "int":
            dists[name] = optuna.distributions.IntDistribution(spec["low"], spec["high"], log=spec.get("log", False))
        elif kind == "categorical":
            dists[name] = optuna.distributions.CategoricalDistribution(spec["choices"])
        else:
            raise ValueError(f"search space {name!r}: unknown type {kind!r}")
    return dists


def rebuild_study(records: list[TrialRecord], space: dict[str, dict[str, Any]], seed: int) -> optuna.Study:
    """A fresh in-memory study holding the stored trials: the sampler and pruner see them all."""
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
    )
    dists = distributions(space)
    states = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "fail": TrialState.FAIL}
    for rec in records:
        study.add_trial(optuna.trial.create_trial(
            params=rec["params"], distributions=dists, state=states[rec["state"]],
            value=rec["value"] if rec["state"] == "complete" else None,
            intermediate_values={int(k): v for k, v in rec["intermediate"].items()},
        ))
    return study


def best_record(records: list[TrialRecord]) -> TrialRecord | None:
    """The completed trial with the highest finite metric; trials without one never win."""
    scored = [r for r in records if r["state"] == "complete" and r["value"] is not None and math.isfinite(r["value"])]
    return max(scored, key=lambda r: (r["value"], -r["number"]), default=None)


def _model(params: dict[str, Any], seed: int) -> SGDClassifier:
    return SGDClassifier(loss="log_loss", random_state=seed, **params)


# -- steps -------------------------------------------------------------------------------------------

@step
def load_dataset(seed: int) -> Annotated[Dataset, "dataset"]:
    """scikit-learn's bundled digits (no download), scaled and split."""
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_train)
    return {"x_train": scaler.transform(x_train), "y_train": y_train, "x_val": scaler.transform(x_val), "y_val": y_val}


@step
def run_trial(
    number: int, params: dict[str, Any], data: Dataset, history: list[TrialRecord],
    space: dict[str, dict[str, Any]], epochs: int, seed: int, crash: bool,
) -> Annotated[TrialRecord, "trial"]:
    """Train for ``epochs`` epochs, reporting accuracy to a pruner that knows the earlier trials."""
    if crash:  # stands in for an out-of-memory kill or a bad combination of parameters
        raise RuntimeError(f"trial {number} crashed (listed in crash_trials)")
    study = rebuild_study(history, space, seed)
    study.enqueue_trial(params)
    trial = study.ask(distributions(space))
    model = _model(params, seed)
    classes = np.unique(data["y_train"])
    intermediate: dict[str, float] = {}
    state = "complete"
    for epoch in range(epochs):
        model.partial_fit(data["x_train"], data["y_train"], classes=classes)
        accuracy = float(model.score(data["x_val"], data["y_val"]))
        intermediate[str(epoch)] = accuracy
        trial.report(accuracy, epoch)
        if trial.should_prune():
            state = "pruned"
            break
    value: float | None = intermediate[str(len(intermediate) - 1)]
    if not np.all(np.isfinite(model.coef_)):
        state, value = "fail", None  # diverged: there is no metric to compare
    log_metadata({"accuracy": value, "state": state, "epochs_run": len(intermediate), **params})
    return {"number": number, "params": params, "state": state, "value": value, "intermediate": intermediate}


@step
def select_best(trials: list[TrialRecord]) -> tuple[
    Annotated[dict[str, Any], ArtifactConfig(name="best_params", tags=["optuna"])],
    Annotated[float, "best_value"],
]:
    best = best_record(trials)
    if best is None:
        raise ValueError("no trial produced a metric")
    log_metadata({"best_trial": best["number"], "best_value": best["value"], "trials": len(trials)})
    return best["params"], float(best["value"])  # type: ignore[arg-type]


@step
def retrain(params: dict[str, Any], data: Dataset, epochs: int, seed: int) -> Annotated[
    SGDClassifier, ArtifactConfig(name="best_model", tags=["optuna"])
]:
    model = _model(params, seed)
    x = np.vstack([data["x_train"], data["x_val"]])
    y = np.concatenate([data["y_train"], data["y_val"]])
    for _ in range(epochs):
        model.partial_fit(x, y, classes=np.unique(y))
    log_metadata({"train_accuracy": float(model.score(x, y))})
    return model


# -- pipeline ----------------------------------------------------------------------------------------

@pipeline(dynamic=True, depends_on=[run_trial, retrain])
def optuna_tuning(
    mode: str = "adaptive",
    n_trials: int = 12,
    batch_size: int = 4,
    epochs: int = 12,
    seed: int = 7,
    search_space: dict[str, dict[str, Any]] | None = None,
    crash_trials: list[int] | None = None,
) -> None:
    """``mode="batch"``: one round of ``n_trials``; ``"adaptive"``: rounds of ``batch_size``,
    each asked from a study rebuilt from the trials stored so far."""
    if mode not in ("batch", "adaptive"):
        raise ValueError(f"mode must be 'batch' or 'adaptive', not {mode!r}")
    space = search_space or DEFAULT_SPACE
    dists = distributions(space)
    crash = set(crash_trials or [])  # trial numbers that crash on purpose (failure handling demo)
    data = load_dataset(seed)
    records: list[TrialRecord] = []
    stored: list[ArtifactFuture] = []  # trial artifacts: the history later trials prune against
    sizes = [n_trials] if mode == "batch" else [min(batch_size, n_trials - i) for i in range(0, n_trials, batch_size)]
    for round_no, size in enumerate(sizes):
        study = rebuild_study(records, space, seed + round_no)
        asked = [study.ask(dists) for _ in range(size)]
        results = run_trial.map(
            number=[t.number for t in asked], params=[t.params for t in asked],
            crash=[t.number in crash for t in asked], data=unmapped(data),
            history=unmapped(list(stored)), space=unmapped(space), epochs=unmapped(epochs), seed=unmapped(seed),
        )
        for trial, future in zip(asked, results):
            try:
                record: TrialRecord = future.load()
            except StepFailedError:  # the step is recorded failed; the sweep goes on
                record = {"number": trial.number, "params": trial.params, "state": "fail", "value": None,
                          "intermediate": {}}
            else:
                stored.append(future.result())
            records.append(record)
            if record["state"] == "complete" and record["value"] is not None:
                study.tell(trial, record["value"])
            else:
                study.tell(trial, state=TrialState.PRUNED if record["state"] == "pruned" else TrialState.FAIL)
    best_params, _ = select_best(stored)
    retrain(best_params, data, epochs, seed)
