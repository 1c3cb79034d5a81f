import numpy as np
import pandas as pd
import pytest
from conftest import TARGETS, small_estimator
from sklearn.metrics import (
    balanced_accuracy_score,
    mean_absolute_error,
    precision_recall_fscore_support,
    roc_auc_score,
)

from sk_multitask import multitask_scorer


def task_scores(model, X, y, metrics=None):
    from sk_multitask.predicting import model_task_scores

    return model_task_scores(model, X, y, metrics)


def test_task_scores_use_labelled_cells_only(fitted, image_set):
    y = image_set[TARGETS]
    predicted = fitted.predict(image_set)
    labelled = y["shape"].notna()

    scores = task_scores(fitted, image_set, y)

    assert list(scores) == TARGETS
    expected = (predicted.loc[labelled, "shape"] == y.loc[labelled, "shape"]).mean()
    assert scores["shape"] == pytest.approx(expected)


def test_scorer_reports_each_task_and_their_mean(fitted, image_set):
    scores = multitask_scorer()(fitted, image_set, image_set[TARGETS])
    assert set(scores) == {*TARGETS, "mean"}
    assert scores["mean"] == pytest.approx(np.mean([scores[t] for t in TARGETS]))
    assert scores["mean"] == pytest.approx(fitted.score(image_set, image_set[TARGETS]))


def test_scorer_metrics_by_name_and_callable(fitted, image_set):
    y = image_set[TARGETS]
    predicted = fitted.predict(image_set)
    area, color = y["area"].notna(), y["color"].notna()
    scorer = multitask_scorer({"area": "neg_mean_absolute_error", "color": balanced_accuracy_score})

    scores = scorer(fitted, image_set, y)

    assert scores["area"] == pytest.approx(
        -mean_absolute_error(y.loc[area, "area"], predicted.loc[area, "area"])
    )
    assert scores["color"] == pytest.approx(
        balanced_accuracy_score(y.loc[color, "color"], predicted.loc[color, "color"])
    )


def test_a_task_without_labels_is_left_out_and_all_unlabelled_is_an_error(fitted, image_set):
    y = image_set[TARGETS].assign(area=np.nan)
    assert list(task_scores(fitted, image_set, y)) == ["color", "shape"]
    with pytest.raises(ValueError, match="no labelled cell in any task"):
        task_scores(fitted, image_set, y[["area"]])


def test_unknown_metric_name_is_refused():
    with pytest.raises(ValueError, match="unknown metric 'accurasy'"):
        multitask_scorer({"color": "accurasy"})


def test_scores_of_a_bool_target_with_missing_cells(image_set):
    """A bool column with a gap is of dtype object: scikit-learn's metrics call it 'unknown'."""
    y = pd.DataFrame({"big": (image_set["area"] > 0.25).astype(object)})
    y.loc[::7, "big"] = None
    est = small_estimator(image_set, max_epochs=1).fit(image_set, y)
    labelled = y["big"].notna()
    predicted = est.predict(image_set)["big"]
    expected = (predicted[labelled].astype(bool) == y["big"][labelled].astype(bool)).mean()

    assert est.score(image_set, y) == pytest.approx(expected)
    assert est.evaluate(image_set, y).loc["big", "accuracy"] == pytest.approx(expected)


def test_unknown_task_in_scorer_metrics_is_refused(fitted, image_set):
    scorer = multitask_scorer({"nope": "r2"})
    with pytest.raises(ValueError, match=r"metrics names unknown tasks \['nope'\]"):
        scorer(fitted, image_set, image_set[TARGETS])


def test_evaluate_per_class_matches_scikit_learn(fitted, image_set):
    y = image_set[TARGETS]
    table = fitted.evaluate(image_set, y, per_class=True)

    assert list(table.columns) == ["precision", "recall", "f1", "support", "roc_auc"]
    assert list(table.index.get_level_values("task").unique()) == ["color", "shape"]
    labelled = y["shape"].notna()
    truth = y.loc[labelled, "shape"]
    predicted = fitted.predict(image_set)["shape"][labelled]
    classes = ["circle", "square", "triangle"]
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=classes, zero_division=0.0
    )
    shape = table.loc["shape"]
    assert shape["precision"].to_numpy() == pytest.approx(precision)
    assert shape["recall"].to_numpy() == pytest.approx(recall)
    assert shape["f1"].to_numpy() == pytest.approx(f1)
    assert shape["support"].tolist() == support.tolist()
    proba = fitted.predict_proba(image_set)["shape"][labelled]
    expected_auc = roc_auc_score(truth == "square", proba["square"])
    assert shape.loc["square", "roc_auc"] == pytest.approx(expected_auc)


def test_evaluate_shows_the_metric_columns_of_the_kinds_present(fitted, image_set):
    y = image_set[TARGETS]
    table = fitted.evaluate(image_set, y)
    assert list(table.columns) == [
        "kind", "n_labelled", "accuracy", "balanced_accuracy", "f1_macro", "log_loss",
        "mae", "rmse", "r2",
    ]  # no multi-label task: no f1_micro or hamming_loss column
    only_area = fitted.evaluate(image_set, y[["area"]])
    assert list(only_area.columns) == ["kind", "n_labelled", "mae", "rmse", "r2"]
    assert not only_area.isna().any().any()


def test_metrics_by_name_are_scikit_learn_scorers(fitted, image_set):
    """A metric name scores as scikit-learn's scorer of that name (its sign included)."""
    from sklearn.metrics import get_scorer

    from sk_multitask.evaluation._metrics import METRICS

    for name in ["accuracy", "r2", "neg_mean_absolute_error", "neg_root_mean_squared_error"]:
        assert repr(METRICS[name]) == repr(get_scorer(name))
    y = image_set[TARGETS]
    labelled = y["area"].notna()
    predicted = fitted.predict(image_set)["area"][labelled]
    scores = task_scores(fitted, image_set, y, {"area": "neg_root_mean_squared_error"})
    rmse = np.sqrt(np.mean((predicted - y["area"][labelled]) ** 2))
    assert scores["area"] == pytest.approx(-rmse)
