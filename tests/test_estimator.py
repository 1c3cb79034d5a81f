import copy
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TARGETS, small_estimator
from PIL import Image
from sklearn.exceptions import NotFittedError
from sklearn.metrics import r2_score
from sklearn.utils.validation import check_is_fitted
from skorch.callbacks import LRScheduler

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.datasets import make_multitask_images
from sk_multitask.training._config import TrainingConfig, resolve_num_workers


def test_predict_returns_a_frame_with_original_labels_and_index(fitted, image_set):
    X = image_set.iloc[10:30].set_index(pd.Index(range(100, 120), name="id"))

    predicted = fitted.predict(X)

    assert list(predicted.columns) == TARGETS
    assert predicted.index.equals(X.index)
    assert set(predicted["color"]) <= {"red", "green", "blue", "yellow", "purple"}
    assert set(predicted["shape"]) <= {"circle", "square", "triangle"}
    assert predicted["color"].dtype == image_set["color"].dtype
    assert predicted["area"].dtype == np.float64


def test_tasks_kinds_and_classes_come_from_observed_cells(fitted):
    assert {n: t.kind for n, t in fitted.tasks_.items()} == {
        "color": "classification",
        "shape": "classification",
        "area": "regression",
    }
    assert list(fitted.tasks_["color"].classes_) == ["blue", "green", "purple", "red", "yellow"]
    assert list(fitted.tasks_["shape"].classes_) == ["circle", "square", "triangle"]
    assert fitted.image_size_ == (16, 16)


def test_predict_proba_columns_are_class_labels_and_rows_sum_to_one(fitted, image_set):
    proba = fitted.predict_proba(image_set.head(12))

    assert set(proba) == {"color", "shape"}
    assert list(proba["shape"].columns) == ["circle", "square", "triangle"]
    assert np.allclose(proba["color"].sum(axis=1), 1.0, atol=1e-5)
    argmax = proba["color"].idxmax(axis=1).to_numpy()
    assert (argmax == fitted.predict(image_set.head(12))["color"].to_numpy()).all()


def test_history_has_per_task_losses_and_metrics_each_epoch(fitted):
    history = fitted.history_
    assert len(history) == 2
    for prefix in ("train", "valid"):
        for key in (
            "loss",
            "color_loss",
            "color_acc",
            "shape_acc",
            "area_loss",
            "area_mae",
            "area_rmse",
        ):
            values = history[:, f"{prefix}_{key}"]
            assert len(values) == 2 and np.isfinite(values).all(), key
    assert 0 <= history[-1, "valid_color_acc"] <= 1
    assert history[-1, "valid_area_rmse"] >= history[-1, "valid_area_mae"] > 0


def test_history_metrics_match_a_recomputation_on_the_validation_rows(fitted, image_set):
    valid = image_set[image_set["is_valid"]]
    predicted = fitted.predict(valid)
    labelled = valid["color"].notna()
    accuracy = (predicted.loc[labelled, "color"] == valid.loc[labelled, "color"]).mean()
    area = valid["area"].notna()
    mae = (predicted.loc[area, "area"] - valid.loc[area, "area"]).abs().mean()

    assert fitted.history_[-1, "valid_color_acc"] == pytest.approx(accuracy, abs=1e-6)
    assert fitted.history_[-1, "valid_area_mae"] == pytest.approx(mae, rel=1e-4)


def test_score_is_mean_of_accuracy_and_r2_on_labelled_cells(fitted, image_set):
    y = image_set[TARGETS]
    predicted = fitted.predict(image_set)
    expected = []
    for name in TARGETS:
        labelled = y[name].notna()
        truth, guess = y.loc[labelled, name], predicted.loc[labelled, name]
        expected.append((truth == guess).mean() if name != "area" else r2_score(truth, guess))

    assert fitted.score(image_set, y) == pytest.approx(np.mean(expected))
    assert fitted.score(image_set, y[["shape"]]) == pytest.approx(expected[1])


@pytest.mark.slow
def test_reaches_target_quality_on_the_synthetic_set(tmp_path):
    """The foundation's bar: >= 0.90 accuracy per classification, R² >= 0.80, on CPU."""
    df = make_multitask_images(1000, image_size=32, missing_rate=0.1, path=tmp_path, random_state=0)
    y = df[TARGETS]
    est = small_estimator(df, image_size=32, max_epochs=12).fit(df, y)

    valid = df["is_valid"].to_numpy()
    scores = {name: est.score(df[valid], y.loc[valid, [name]]) for name in TARGETS}
    assert scores["color"] >= 0.90
    assert scores["shape"] >= 0.90
    assert scores["area"] >= 0.80


def test_round_trips_labels_dtypes_and_units(image_set):
    df = image_set.copy()
    codes = {"red": 0, "green": 1, "blue": 2, "yellow": 3, "purple": 4}
    y = pd.DataFrame(
        {
            "color_code": df["color"].map(codes).fillna(-1).astype(int),
            "shape": df["shape"].astype("category"),
            "big": (df["area"] > 0.25).astype(bool),
            "age": df["area"] * 1000 + 20,
        }
    )
    est = small_estimator(df, max_epochs=1).fit(df, y)
    predicted = est.predict(df)

    assert {n: t.kind for n, t in est.tasks_.items()} == {
        "color_code": "classification",
        "shape": "classification",
        "big": "classification",
        "age": "regression",
    }
    assert predicted["color_code"].dtype == np.int64
    assert set(predicted["color_code"]) <= {-1, 0, 1, 2, 3, 4}
    assert isinstance(predicted["shape"].dtype, pd.CategoricalDtype)
    assert list(predicted["shape"].cat.categories) == list(y["shape"].cat.categories)
    assert predicted["big"].dtype == bool
    # In original units: near the targets' scale (hundreds), not standardised (~0).
    age = y["age"].dropna()
    assert abs(predicted["age"].mean() - age.mean()) < age.std()
    assert predicted["age"].min() > 0


def test_missing_cells_never_make_a_class_nor_a_nan_loss(image_set):
    df = image_set.copy()
    y = df[TARGETS].copy()
    y["color"] = y["color"].astype(object).where(y.index % 3 != 0, None)
    y["shape"] = y["shape"].astype(object).where(y.index % 4 != 0, pd.NA)
    y.loc[::2, "area"] = np.nan

    est = small_estimator(df, max_epochs=1).fit(df, y)

    assert len(est.tasks_["color"].classes_) == 5
    assert all(isinstance(c, str) for c in est.tasks_["shape"].classes_)
    assert np.isfinite(est.history_[:, "train_loss"]).all()
    assert np.isfinite(est.history_[:, "valid_loss"]).all()
    assert est.predict(df)[TARGETS].notna().all().all()


def test_uint8_arrays_and_path_lists_are_accepted(image_set):
    df = image_set.head(40)
    root = df.attrs["image_root"]
    arrays = np.stack([np.array(Image.open(f"{root}/{f}")) for f in df["filename"]])
    y = df[TARGETS].reset_index(drop=True)

    from_array = small_estimator(df, max_epochs=1, valid_split=None).fit(arrays, y)
    from_list = small_estimator(df, max_epochs=1, valid_split=0.25).fit(list(df["filename"]), y)

    assert from_array.predict(arrays[:, :, :, 0]).shape == (40, 3)  # grayscale too
    assert from_list.predict(df["filename"]).index.equals(df.index)
    assert len(from_list.history_[:, "valid_loss"]) == 1


def test_a_series_y_is_one_task(image_set):
    est = small_estimator(image_set, max_epochs=1).fit(image_set, image_set["shape"])
    assert list(est.predict(image_set.head(3)).columns) == ["shape"]


def test_task_kinds_can_be_overridden(image_set):
    y = pd.DataFrame({"shape": image_set["shape"], "size": (image_set["area"] * 10).round()})
    est = small_estimator(image_set, max_epochs=1, tasks={"size": "classification"})
    est.fit(image_set, y)
    assert est.tasks_["size"].kind == "classification"
    assert est.predict(image_set.head(5))["size"].isin(est.tasks_["size"].classes_).all()


def test_same_random_state_same_model_and_global_rng_restored(image_set):
    y = image_set[TARGETS]
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = small_estimator(image_set, max_epochs=1).fit(image_set, y)
    assert torch.equal(torch.get_rng_state(), before)
    second = small_estimator(image_set, max_epochs=1).fit(image_set, y)

    pd.testing.assert_frame_equal(first.predict(image_set), second.predict(image_set))


def test_worker_processes_give_the_same_predictions(fitted, image_set):
    with_workers = small_estimator(image_set, max_epochs=1, num_workers=2, valid_split=None)
    with_workers.fit(image_set, image_set[TARGETS])
    without = small_estimator(image_set, max_epochs=1, valid_split=None).fit(
        image_set, image_set[TARGETS]
    )
    pd.testing.assert_frame_equal(with_workers.predict(image_set), without.predict(image_set))


def test_augment_trains_and_predictions_stay_deterministic(image_set):
    est = small_estimator(image_set, max_epochs=1, augment=True).fit(image_set, image_set[TARGETS])
    pd.testing.assert_frame_equal(est.predict(image_set), est.predict(image_set))


def test_user_callbacks_run_and_are_not_modified(image_set):
    scheduler = LRScheduler(policy="StepLR", step_size=1, gamma=0.5)
    est = small_estimator(image_set, lr=0.01, lr_schedule="constant", callbacks=[scheduler])
    est.fit(image_set, image_set[TARGETS])

    assert est.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(0.0025)
    assert not hasattr(scheduler, "lr_scheduler_")  # the estimator trained a copy


def test_a_user_module_as_backbone(image_set):
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1)
    )
    est = small_estimator(image_set, max_epochs=1, backbone=backbone)
    est.fit(image_set, image_set[TARGETS])
    assert est.net_.module_.heads[0].in_features == 8
    assert backbone[0].weight.grad is None  # trained a copy


def test_a_torchvision_model_instance_loses_its_classifier(image_set):
    import torchvision

    df = image_set.head(40)
    backbone = torchvision.models.resnet18(weights=None)
    est = small_estimator(df, backbone=backbone, max_epochs=1, valid_split=None)
    est.fit(df, df[TARGETS])
    assert est.net_.module_.heads[0].in_features == 512  # features, not 1000 logits
    assert isinstance(backbone.fc, torch.nn.Linear)  # the user's model is left alone


def test_a_torchvision_backbone_trains(image_set):
    df = image_set.head(40)
    est = small_estimator(df, backbone="resnet18", image_size=32, max_epochs=1, valid_split=None)
    est.fit(df, df[TARGETS])
    assert est.net_.module_.heads[0].in_features == 512
    assert est.predict(df.head(3)).shape == (3, 3)


def test_verbose_prints_the_epoch_table_with_task_metrics(image_set, capsys):
    # 128 training rows in batches of 48: the last batch (32) is dropped, so an epoch
    # has 2 training batches and 1 validation batch.
    est = small_estimator(image_set, max_epochs=2, batch_size=48, verbose=1)
    est.fit(image_set, image_set[TARGETS])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    header = next(line for line in lines if "epoch" in line)
    columns = ["epoch", "train_loss", "valid_loss", "valid_color_acc", "valid_shape_acc"]
    assert header.split() == [*columns, "valid_area_mae", "dur"]  # losses first, task order
    assert max(len(line) for line in lines) <= 100
    assert "\x1b[" not in captured.out  # no colour codes in a redirected log
    assert "/3" in captured.err and "/4" not in captured.err  # the progress bar's total


def test_epoch_table_without_validation_shows_training_metrics(image_set, capsys):
    est = small_estimator(image_set, max_epochs=1, valid_split=None, verbose=1)
    est.fit(image_set, image_set[TARGETS])
    header = next(line for line in capsys.readouterr().out.splitlines() if "epoch" in line)
    assert header.split() == [
        "epoch",
        "train_loss",
        "train_color_acc",
        "train_shape_acc",
        "train_area_mae",
        "dur",
    ]


# -- bad input: a clear error naming the cause, nothing half fitted -------------------


def _bad_image_set(image_set, tmp_path):
    df = image_set.head(40).copy()
    root = df.attrs["image_root"]
    for name in df["filename"]:
        shutil.copy(f"{root}/{name}", tmp_path / name)
    (tmp_path / df["filename"].iloc[7]).write_bytes(b"\xff\xd8 not a jpeg")
    df.attrs = {"image_root": str(tmp_path)}
    return df


def test_corrupt_image_names_the_file_and_leaves_nothing_fitted(image_set, tmp_path):
    df = _bad_image_set(image_set, tmp_path)
    est = small_estimator(df, max_epochs=1, valid_split=None, batch_size=8)
    with pytest.raises(ValueError, match=re.escape(df["filename"].iloc[7])):
        est.fit(df, df[TARGETS])
    with pytest.raises(NotFittedError):
        check_is_fitted(est)


def test_failed_refit_keeps_the_previous_model_intact(fitted_copy, image_set, tmp_path):
    est = fitted_copy
    before = est.predict(image_set)
    bad = _bad_image_set(image_set, tmp_path)
    with pytest.raises(ValueError, match="cannot decode image file"):
        est.set_params(image_root=bad.attrs["image_root"], valid_split=None).fit(bad, bad[TARGETS])
    est.set_params(image_root=image_set.attrs["image_root"])
    pd.testing.assert_frame_equal(est.predict(image_set), before)


BAD_INPUTS = {
    "missing file": (
        lambda df: df.assign(filename=df["filename"].where(df.index != 3, "nope.jpg")),
        lambda df: df[TARGETS],
        FileNotFoundError,
        "image file not found: .*nope.jpg",
    ),
    "length mismatch": (
        lambda df: df,
        lambda df: df[TARGETS].iloc[:-1],
        ValueError,
        "X has 160 images but y has 159 rows",
    ),
    "all-missing target": (
        lambda df: df,
        lambda df: df[TARGETS].assign(area=np.nan),
        ValueError,
        "target 'area' has no labelled cell",
    ),
    "unknown image column": (
        lambda df: df.rename(columns={"filename": "path"}),
        lambda df: df[TARGETS],
        ValueError,
        "image column 'filename' is not in X",
    ),
    "y without columns": (lambda df: df, lambda df: df[[]], ValueError, "y has no columns"),
    "empty X": (lambda df: df.iloc[:0], lambda df: df[TARGETS].iloc[:0], ValueError, "X is empty"),
    "valid column missing": (
        lambda df: df.drop(columns="is_valid"),
        lambda df: df[TARGETS],
        ValueError,
        "valid_split='is_valid' names a column that X does not have",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_a_clear_error_and_fits_nothing(image_set, case):
    make_X, make_y, error, match = BAD_INPUTS[case]
    est = small_estimator(image_set)
    with pytest.raises(error, match=match):
        est.fit(make_X(image_set), make_y(image_set))
    with pytest.raises(NotFittedError):
        check_is_fitted(est)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"tasks": {"area": "ranking"}}, "unknown task kind 'ranking' for target 'area'"),
        ({"tasks": {"age": "regression"}}, r"tasks names unknown tasks \['age'\]"),
        ({"loss_weights": {"age": 1.0}}, "loss_weights names unknown tasks"),
        ({"backbone": "resnet9000"}, "unknown backbone 'resnet9000'"),
        ({"max_epochs": 0}, "'max_epochs' parameter"),
        ({"optimizer": "lbfgs2"}, "'optimizer' parameter"),
        (
            {"device": "cuda:0"} if not torch.cuda.is_available() else {"max_epochs": -1},
            "no CUDA device|'max_epochs' parameter",
        ),
    ],
)
def test_bad_parameters_raise_in_fit(image_set, params, match):
    est = small_estimator(image_set, **params)
    with pytest.raises(ValueError, match=match):
        est.fit(image_set, image_set[TARGETS])
    with pytest.raises(NotFittedError):
        check_is_fitted(est)


def test_target_labelled_only_in_validation_rows_is_refused(image_set):
    y = image_set[TARGETS].copy()
    y.loc[~image_set["is_valid"], "area"] = np.nan
    with pytest.raises(ValueError, match="'area' has no labelled cell among the training rows"):
        small_estimator(image_set).fit(image_set, y)


def test_non_boolean_valid_column_is_refused(image_set):
    X = image_set.assign(is_valid=image_set["is_valid"].astype(int))
    with pytest.raises(ValueError, match="must be boolean"):
        small_estimator(image_set).fit(X, image_set[TARGETS])


@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_methods_before_fit_raise_not_fitted(image_set, method):
    with pytest.raises(NotFittedError):
        getattr(MultiTaskImageEstimator(), method)(image_set)
    with pytest.raises(NotFittedError):
        MultiTaskImageEstimator().score(image_set, image_set[TARGETS])


def test_predict_on_bad_input_names_the_cause(fitted, image_set):
    with pytest.raises(ValueError, match="X is empty"):
        fitted.predict(image_set.iloc[:0])
    with pytest.raises(FileNotFoundError, match="ghost.jpg"):
        fitted.predict(["ghost.jpg"])
    with pytest.raises(ValueError, match="not tasks of the estimator"):
        fitted.score(image_set, image_set[["area"]].rename(columns={"area": "size"}))


# -- evaluate and top losses ------------------------------------------------------------


def _hand_row_losses(est, X, y):
    """Each row's loss per task from predict/predict_proba: NaN where the truth is missing.

    Training losses: of the raw probabilities, before the calibration's temperatures."""
    est = copy.copy(est)
    est.calibration_ = None
    proba, predicted = est.predict_proba(X), est.predict(X)
    losses = pd.DataFrame(index=X.index, columns=TARGETS, dtype=float)
    for name, task in est.tasks_.items():
        for i, truth in zip(X.index, y[name], strict=True):
            if pd.isna(truth):
                continue
            if task.kind == "classification":
                losses.loc[i, name] = -np.log(proba[name].loc[i, truth])
            else:
                scale = task.encoder.scale_[0]
                losses.loc[i, name] = ((predicted.loc[i, name] - truth) / scale) ** 2
    return losses


def test_top_losses_for_one_task_equal_a_hand_computation(fitted, image_set):
    y = image_set[TARGETS]
    expected = _hand_row_losses(fitted, image_set, y)["shape"].dropna()
    expected = expected.sort_values(ascending=False, kind="stable").head(7)

    top = fitted.top_losses(image_set, y, k=7, task="shape")

    assert list(top.index) == list(expected.index)
    assert np.allclose(top["loss"], expected, rtol=1e-4)
    assert top["shape_true"].notna().all()  # rows without a shape label are not ranked
    assert list(top.columns) == ["image"] + [
        f"{t}_{s}" for t in TARGETS for s in ("pred", "true")
    ] + ["loss"]
    assert (top["image"] == image_set.loc[top.index, "filename"]).all()


def test_combined_top_losses_use_loss_weights_and_ignore_missing_truth(image_set):
    y = image_set[TARGETS]
    est = small_estimator(image_set, max_epochs=1, loss_weights={"area": 0.5, "color": 2.0})
    est.fit(image_set, y)
    hand = _hand_row_losses(est, image_set, y)
    combined = (hand * pd.Series({"color": 2.0, "shape": 1.0, "area": 0.5})).sum(axis=1)
    expected = combined.sort_values(ascending=False, kind="stable").head(10)

    top = est.top_losses(image_set, y, k=10)

    assert list(top.index) == list(expected.index)
    assert np.allclose(top["loss"], expected, rtol=1e-4)
    # A row whose every truth is missing has zero loss, not an error.
    unlabelled = y.iloc[:3].copy()
    unlabelled[:] = np.nan
    worst = est.top_losses(image_set.iloc[:3], unlabelled.astype(object), k=3)
    assert (worst["loss"] == 0).all()
    assert worst[[f"{t}_true" for t in TARGETS]].isna().all().all()


def test_top_losses_on_an_image_array_reference_positions(fitted, image_set):
    root = image_set.attrs["image_root"]
    arrays = np.stack([np.array(Image.open(f"{root}/{f}")) for f in image_set["filename"]])
    top = fitted.top_losses(arrays, image_set[["color"]].reset_index(drop=True), k=4, task="color")
    assert list(top["image"]) == list(top.index)


def test_top_losses_bad_arguments(fitted, image_set):
    with pytest.raises(ValueError, match="unknown task 'size'"):
        fitted.top_losses(image_set, image_set[TARGETS], task="size")
    # The shared prediction protocol checks k without scikit-learn (the ONNX predictor's too).
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        fitted.top_losses(image_set, image_set[TARGETS], k=0)


def test_evaluate_reports_each_task_on_labelled_cells(fitted, image_set):
    from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss, mean_absolute_error

    y = image_set[TARGETS]
    predicted, proba = fitted.predict(image_set), fitted.predict_proba(image_set)

    table = fitted.evaluate(image_set, y)

    assert list(table.index) == TARGETS
    shape = y["shape"].notna()
    assert table.loc["shape", "n_labelled"] == shape.sum()
    truth, guess = y.loc[shape, "shape"], predicted.loc[shape, "shape"]
    assert table.loc["shape", "accuracy"] == pytest.approx((truth == guess).mean())
    assert table.loc["shape", "balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(truth, guess)
    )
    assert table.loc["shape", "f1_macro"] == pytest.approx(f1_score(truth, guess, average="macro"))
    classes = list(fitted.tasks_["shape"].classes_)
    assert table.loc["shape", "log_loss"] == pytest.approx(
        log_loss(truth, proba["shape"].loc[shape, classes], labels=classes), rel=1e-4
    )
    area = y["area"].notna()
    assert table.loc["area", "mae"] == pytest.approx(
        mean_absolute_error(y.loc[area, "area"], predicted.loc[area, "area"])
    )
    assert np.isnan(table.loc["area", "accuracy"]) and np.isnan(table.loc["color", "r2"])
    assert table.loc["area", "kind"] == "regression"


# -- speed options: cache, workers, precision ---------------------------------------------


def test_cache_trains_the_same_model_as_streaming(image_set):
    y = image_set[TARGETS]
    streamed = small_estimator(image_set, max_epochs=1, num_workers=0).fit(image_set, y)
    cached = small_estimator(image_set, max_epochs=1, cache=True).fit(image_set, y)

    pd.testing.assert_frame_equal(cached.predict(image_set), streamed.predict(image_set))
    assert cached.history_[-1, "valid_loss"] == pytest.approx(streamed.history_[-1, "valid_loss"])


def test_auto_workers():
    def config(**params):
        return TrainingConfig.from_estimator(MultiTaskImageEstimator(**params))

    assert resolve_num_workers(config(device="cpu"), cache=False) == 0  # the cores train
    assert resolve_num_workers(config(device="cpu", num_workers=3), cache=True) == 3
    if torch.cuda.is_available():
        assert resolve_num_workers(config(device="cuda"), cache=False) >= 1
        assert resolve_num_workers(config(device="cuda"), cache=True) == 0
        assert resolve_num_workers(config(device="cuda", augment=True), cache=True) >= 1


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_persists(image_set, precision, tmp_path):
    import joblib

    df = image_set.head(64)
    est = small_estimator(df, max_epochs=3, precision=precision, valid_split=None, lr=3e-3)
    est.fit(df, df[TARGETS])

    losses = est.history_[:, "train_loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    predicted = est.predict(df)
    assert predicted["area"].dtype == np.float64
    loaded = joblib.load(joblib.dump(est, tmp_path / "m.joblib")[0])
    pd.testing.assert_frame_equal(loaded.predict(df), predicted)


def test_top_losses_and_evaluate_on_tiny_subsets(fitted, image_set):
    y = image_set[TARGETS].copy()
    y["area"] = np.nan
    empty = fitted.top_losses(image_set.head(5), y.head(5), task="area")
    assert len(empty) == 0 and list(empty.columns)[-1] == "loss"
    table = fitted.evaluate(image_set.head(3), image_set[TARGETS].head(3))
    assert (table["n_labelled"] <= 3).all()
    with pytest.raises(NotFittedError):
        MultiTaskImageEstimator().top_losses(image_set, y, task="area")


# -- a new user's mistakes: refused or warned, never silently wrong -------------------


def test_one_colour_image_array_is_refused_with_the_fix(fitted, image_set):
    image = np.array(Image.open(f"{image_set.attrs['image_root']}/img_00000.jpg"))
    assert image.shape == (16, 16, 3)
    with pytest.raises(ValueError, match=re.escape("img[None]")):
        fitted.predict(image)
    assert fitted.predict(image[None]).shape == (1, 3)
    assert fitted.predict(np.stack([image[..., 0]] * 2)).shape == (2, 3)  # grayscale batch


@pytest.mark.parametrize(
    "make_y, params, match",
    [
        (lambda df: df, {}, "y holds the image column 'filename'"),
        (lambda df: df.drop(columns="filename"), {}, "y holds the validation column 'is_valid'"),
        (
            lambda df: df.drop(columns="filename"),
            {"valid_split": 0.2},
            "y holds a boolean column 'is_valid'",
        ),
        (
            lambda df: df[TARGETS].assign(id=[f"person {i}" for i in range(len(df))]),
            {},
            "target 'id' looks like an identifier",
        ),
    ],
    ids=["fit(df, df)", "is_valid in y", "is_valid in y, fraction split", "identifier"],
)
def test_inputs_inside_y_are_refused(image_set, make_y, params, match):
    est = small_estimator(image_set, **params)
    with pytest.raises(ValueError, match=match):
        est.fit(image_set, make_y(image_set))


def test_images_much_smaller_than_image_size_warn_with_their_size(image_set):
    df = image_set.head(24)
    est = small_estimator(df, image_size=40, max_epochs=1, valid_split=None)
    with pytest.warns(UserWarning, match="images are about 16x16 pixels .* image_size=40"):
        est.fit(df, df[TARGETS])


def test_transform_gives_features_for_a_pipeline(image_set):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    df = image_set[image_set["color"].notna()]
    features = small_estimator(df, max_epochs=1)
    pipe = make_pipeline(features, LogisticRegression(max_iter=500)).fit(df, df["color"])

    fitted_features = pipe[0]
    X = fitted_features.transform(df.head(5))
    assert X.shape == (5, 256) and X.dtype == np.float32
    names = pipe[:-1].get_feature_names_out()
    assert len(names) == 256 and names[0] == "multitaskimageestimator0"
    assert set(pipe.predict(df.head(5))) <= set(df["color"])
    assert pipe.score(df, df["color"]) > 0.3  # 5 classes: features carry the colour
    frame = fitted_features.set_output(transform="pandas").transform(df.head(2))
    assert list(frame.columns) == list(names) and frame.index.equals(df.head(2).index)
