"""partial_fit: one epoch per call on the same tasks, and Optuna's pruning search with it."""

import numpy as np
import pytest
import torch
from conftest import TARGETS, small_estimator


def _state(est):
    return {k: v.clone() for k, v in est.net_.module_.state_dict().items()}


def _equal(a, b):
    return all(torch.equal(value, b[key]) for key, value in a.items())


@pytest.fixture(scope="module")
def data(image_set):
    """64 of the images: enough for a few epochs, fast."""
    return image_set.iloc[:64]


@pytest.fixture(scope="module")
def three_calls(image_set, data):
    """An estimator after three partial_fit calls, and its parameters after each."""
    est, states = small_estimator(image_set), []
    for _ in range(3):
        states.append(_state(est.partial_fit(data, data[TARGETS])))
    return est, states


def test_each_call_trains_one_epoch(three_calls):
    est, states = three_calls

    assert [epoch["epoch"] for epoch in est.history_] == [1, 2, 3]
    assert all(np.isfinite(epoch["valid_loss"]) for epoch in est.history_)
    assert not _equal(states[0], states[1])
    assert not _equal(states[1], states[2])
    assert _equal(states[2], _state(est))


def test_the_first_call_is_a_fit_of_one_epoch(image_set, data):
    fitted = small_estimator(image_set, max_epochs=1).fit(data, data[TARGETS])
    partial = small_estimator(image_set, max_epochs=7).partial_fit(data, data[TARGETS])

    assert _equal(_state(partial), _state(fitted))
    assert len(partial.history_) == 1


def test_a_call_after_fit_continues_it_with_weights(image_set, data):
    est = small_estimator(image_set, max_epochs=1, early_stopping=True)
    est.fit(data, data[TARGETS])
    ones = small_estimator(image_set, max_epochs=1).fit(data, data[TARGETS])
    before = _state(est)

    est.partial_fit(data, data[TARGETS])
    ones.partial_fit(data, data[TARGETS], sample_weight=np.ones(len(data)))

    assert [epoch["epoch"] for epoch in est.history_] == [1, 2]
    assert not _equal(before, _state(est))
    assert _equal(_state(ones), _state(est))  # early stopping does not apply to partial_fit


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        (["color", "shape"], r"^partial_fit continues a model of tasks \{'color': "),
        (["color", "shape", "area", "is_valid"], "partial_fit continues a model of tasks"),
    ],
)
def test_other_tasks_are_refused_and_nothing_changes(three_calls, data, columns, match):
    est, states = three_calls
    with pytest.raises(ValueError, match=match):
        est.partial_fit(data, data[columns].rename(columns={"is_valid": "extra"}))
    assert len(est.history_) == 3
    assert _equal(states[2], _state(est))


def test_a_class_unseen_by_the_first_call_is_refused(three_calls, data):
    est, _ = three_calls
    y = data[TARGETS].copy()
    y.loc[y.index[0], "color"] = "ultraviolet"
    with pytest.raises(ValueError, match=r"target 'color' has labels not seen in fit: \['ultra"):
        est.partial_fit(data, y)
    assert len(est.history_) == 3


@pytest.mark.filterwarnings(
    # OptunaSearchCV is marked experimental, and calls optuna.terminator (deprecated in
    # optuna 4.9): optuna-integration's warnings, not this estimator's.
    "ignore::optuna.exceptions.ExperimentalWarning",
    "ignore:`optuna.terminator` module has been deprecated:FutureWarning",
)
def test_optuna_search_with_pruning_runs_partial_fit_and_score(image_set):
    optuna = pytest.importorskip("optuna")
    from optuna_integration import OptunaSearchCV

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = image_set.iloc[:32]
    search = OptunaSearchCV(
        small_estimator(image_set, valid_split=None),
        {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)},
        enable_pruning=True,
        max_iter=3,
        n_trials=2,
        cv=2,
        random_state=0,
        refit=False,
        error_score="raise",
    )
    search.fit(data, data[TARGETS])

    assert [sorted(trial.intermediate_values) for trial in search.trials_] == [[0, 1, 2]] * 2
    scores = [value for trial in search.trials_ for value in trial.intermediate_values.values()]
    assert all(-1 < score <= 1 for score in scores)
    assert search.best_score_ == max(trial.value for trial in search.trials_)
