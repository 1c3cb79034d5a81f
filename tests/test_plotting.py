import copy
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TARGETS, reload, small_estimator
from sklearn.exceptions import NotFittedError
from sklearn.metrics import confusion_matrix
from skorch.history import History

from sk_multitask.inputs._dataset import load_image
from sk_multitask.plotting import (
    plot_confusion_matrix,
    plot_explain,
    plot_history,
    plot_lr_schedule,
    plot_regression,
    plot_top_losses,
    show_batch,
)


def pixels(image_set, filename):
    """An image of the set as the network sees it, (H, W, 3) uint8."""
    path = os.path.join(image_set.attrs["image_root"], filename)
    return load_image(path, (16, 16)).permute(1, 2, 0).numpy()


def shown(ax):
    return np.asarray(ax.images[0].get_array())


def label(value, number=False):
    if pd.isna(value):
        return "?"
    return f"{value:.3g}" if number else str(value)


def expected_title(row):
    return (
        f"color {label(row.color_pred)}/{label(row.color_true)}"
        f" | shape {label(row.shape_pred)}/{label(row.shape_true)}"
        f" | area {label(row.area_pred, True)}/{label(row.area_true, True)}"
        f"\nloss {row.loss:.3g}"
    )


@pytest.mark.slow
def test_importing_the_package_does_not_import_matplotlib():
    code = (
        "import sys, sk_multitask, sk_multitask.plotting, sk_multitask.report; "
        "assert 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_top_losses_by_task_titles_each_image_with_prediction_truth_and_loss(fitted, image_set):
    y = image_set[TARGETS].assign(shape=None)  # every shape truth missing

    fig = plot_top_losses(fitted, image_set, y, k=5, task="color")

    top = fitted.top_losses(image_set, y, k=5, task="color")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [expected_title(row) for row in top.itertuples()]
    assert all(" | shape " in t and "/? | area" in t for t in titles)
    assert fig.get_suptitle() == "Largest color loss (prediction/truth)"
    assert [ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes] == [(2, 3)] * 5
    for ax, filename in zip(fig.axes, top["image"], strict=True):
        assert np.array_equal(shown(ax), pixels(image_set, filename))


def test_top_losses_of_an_image_array_show_its_rows(fitted, image_set):
    X = np.stack([pixels(image_set, f) for f in image_set["filename"]])
    y = image_set[TARGETS]

    fig = plot_top_losses(fitted, X, y, k=4, ncols=2)

    top = fitted.top_losses(X, y, k=4)
    assert [ax.get_title() for ax in fig.axes] == [expected_title(r) for r in top.itertuples()]
    assert fig.get_suptitle() == "Largest combined loss (prediction/truth)"
    assert [ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes] == [(2, 2)] * 4
    for ax, position in zip(fig.axes, top["image"], strict=True):
        assert np.array_equal(shown(ax), X[position])


def test_top_losses_with_heatmaps_show_each_image_once_per_task_with_its_map(
    fitted, image_set
):
    y = image_set[TARGETS]

    fig = plot_top_losses(fitted, image_set, y, k=3, heatmap=True)

    top = fitted.top_losses(image_set, y, k=3)
    assert len(fig.axes) == 3 * 3  # one row per image, one panel per task
    assert [ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes] == [(3, 3)] * 9
    assert fig.get_suptitle().startswith("Largest combined loss (prediction/truth)\nover each")
    rows = image_set.set_index("filename").loc[top["image"]].reset_index()
    for i, row in enumerate(top.itertuples()):
        panels = fig.axes[3 * i : 3 * i + 3]
        assert panels[0].get_title() == f"color {label(row.color_pred)}/{label(row.color_true)}" + (
            f"\nloss {row.loss:.3g}"
        )
        assert panels[1].get_title().startswith("shape ")
        for ax, task in zip(panels, TARGETS, strict=True):
            assert np.array_equal(shown(ax), pixels(image_set, row.image))
            heatmap = fitted.explain(rows.iloc[[i]], task)[0]
            drawn = [np.asarray(image.get_array()) for image in ax.images[1:]]
            # A map that is all 0 (nothing raised the output) is drawn fully transparent.
            assert len(drawn) == 1 and np.allclose(drawn[0], heatmap, atol=1e-6)


def test_plot_explain_draws_the_first_images_with_their_heatmaps(fitted, image_set):
    fig = plot_explain(fitted, image_set, "shape", n=4, ncols=2)

    heatmaps = fitted.explain(image_set.iloc[:4], "shape")
    predicted = fitted.predict(image_set.iloc[:4])["shape"]
    assert [ax.get_title() for ax in fig.axes] == [f"shape {p}" for p in predicted]
    assert fig.get_suptitle() == (
        "Where the network looked for shape: Grad-CAM of each image's prediction"
    )
    for ax, filename, heatmap in zip(fig.axes, image_set["filename"], heatmaps, strict=False):
        assert np.array_equal(shown(ax), pixels(image_set, filename))
        assert np.allclose(np.asarray(ax.images[1].get_array()), heatmap)
    of_label = plot_explain(fitted, image_set, "color", label="red", n=2)
    assert of_label.get_suptitle().endswith("Grad-CAM of 'red' on every image")


def test_plot_explain_titles_an_unreadable_image_so_without_a_heatmap(
    fitted_skip, image_set, tmp_path
):
    from sk_multitask.exceptions import BadImageWarning

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    X = [str(broken), os.path.join(image_set.attrs["image_root"], image_set["filename"][0])]
    with pytest.warns(BadImageWarning):
        fig = plot_explain(fitted_skip, X, "color")
    assert fig.axes[0].get_title() == "unreadable" and len(fig.axes[0].images) == 1
    assert fig.axes[1].get_title().startswith("color ") and len(fig.axes[1].images) == 2


def test_plot_explain_refuses_a_bad_grid_or_task(fitted, image_set):
    with pytest.raises(ValueError, match="The 'n' parameter of plot_explain must be an int"):
        plot_explain(fitted, image_set, "shape", n=0)
    with pytest.raises(ValueError, match="unknown task 'age'"):
        plot_explain(fitted, image_set, "age")


def test_history_plots_each_tasks_loss_and_metric_for_train_and_valid(fitted):
    fig = plot_history(fitted)

    history = pd.DataFrame(list(fitted.history_))
    keys = ["loss", "color_loss", "color_acc", "shape_loss", "shape_acc", "area_loss", "area_mae"]
    assert [ax.get_title() for ax in fig.axes] == [
        "total loss",
        "color: loss",
        "color: accuracy",
        "shape: loss",
        "shape: accuracy",
        "area: loss",
        "area: mean absolute error",
    ]
    assert [ax.get_ylabel() for ax in fig.axes] == [
        *["loss", "loss", "accuracy", "loss", "accuracy", "loss", "MAE"]
    ]
    for ax, key in zip(fig.axes, keys, strict=True):
        assert ax.get_xlabel() == "epoch"
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "valid"]
        for line, prefix in zip(ax.get_lines(), ["train", "valid"], strict=True):
            assert list(line.get_xdata()) == [1, 2]
            assert np.allclose(line.get_ydata(), history[f"{prefix}_{key}"])


def test_history_without_validation_has_train_lines_only(fitted):
    # What valid_split=None records: no valid_* key at all.
    unvalidated = copy.copy(fitted)
    unvalidated.history_ = History(
        [{k: v for k, v in row.items() if not k.startswith("valid")} for row in fitted.history_]
    )

    fig = plot_history(unvalidated)

    assert len(fig.axes) == 7
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train"]


def test_confusion_matrix_counts_the_labelled_cells(fitted, image_set):
    y = image_set[TARGETS]

    fig = plot_confusion_matrix(fitted, image_set, y, "shape")

    labelled = y["shape"].notna().to_numpy()
    classes = ["circle", "square", "triangle"]
    expected = confusion_matrix(
        y["shape"][labelled], fitted.predict(image_set)["shape"][labelled], labels=classes
    )
    (ax,) = fig.axes
    assert np.array_equal(shown(ax), expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == classes
    assert [t.get_text() for t in ax.get_yticklabels()] == classes
    assert ax.get_title() == f"shape: {labelled.sum()} labelled images"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted shape", "true shape")
    normalized = plot_confusion_matrix(fitted, image_set, y, "shape", normalize="true")
    assert np.allclose(shown(normalized.axes[0]), expected / expected.sum(axis=1, keepdims=True))


def test_confusion_matrix_leaves_out_classes_unseen_in_training(fitted, image_set):
    y = image_set[TARGETS].copy()
    y.loc[:9, "shape"] = "hexagon"
    labelled = y["shape"].notna().to_numpy()

    fig = plot_confusion_matrix(fitted, image_set, y, "shape")

    (ax,) = fig.axes
    assert shown(ax).sum() == labelled.sum() - 10
    assert ax.get_title() == (
        f"shape: {labelled.sum() - 10} labelled images\n(10 more of classes unseen in training)"
    )


@pytest.mark.parametrize(
    "task, y_columns, message",
    [
        ("area", TARGETS, "task 'area' is a regression; a confusion matrix needs a classification"),
        ("size", TARGETS, r"unknown task 'size'; tasks are \['color', 'shape', 'area'\]"),
        ("shape", ["color"], r"y has no column 'shape'"),
    ],
)
def test_confusion_matrix_refuses_what_it_cannot_draw(fitted, image_set, task, y_columns, message):
    with pytest.raises(ValueError, match=message):
        plot_confusion_matrix(fitted, image_set, image_set[y_columns], task)


def test_regression_plot_shows_labelled_cells_against_predictions(fitted, image_set):
    y = image_set[TARGETS]
    labelled = y["area"].notna().to_numpy()
    predicted = fitted.predict(image_set)["area"].to_numpy()[labelled]

    fig = plot_regression(fitted, image_set, y, "area")

    truth_ax, residual_ax = fig.axes
    x, true = truth_ax.collections[0].get_offsets().T
    assert sorted(x) == pytest.approx(sorted(predicted))
    assert sorted(true) == pytest.approx(sorted(y["area"].to_numpy()[labelled]))
    _, residuals = residual_ax.collections[0].get_offsets().T
    assert sorted(residuals) == pytest.approx(sorted(y["area"].to_numpy()[labelled] - predicted))
    assert fig.get_suptitle() == f"area: {labelled.sum()} labelled images"
    with pytest.raises(ValueError, match="a predicted-against-true plot needs a regression task"):
        plot_regression(fitted, image_set, y, "shape")


def test_show_batch_titles_each_image_with_its_labels(fitted, image_set):
    X = image_set.head(6)

    fig = show_batch(fitted, X, X[TARGETS], n=10, random_state=0)  # capped at 6 rows

    assert len(fig.axes) == 6
    assert fig.get_suptitle() == "Training images at 16×16 px, not augmented"
    seen = []
    for ax in fig.axes:
        (row,) = [r for r in X.itertuples() if np.array_equal(pixels(X, r.filename), shown(ax))]
        seen.append(row.Index)
        assert ax.get_title() == (
            f"color {label(row.color)} | shape {label(row.shape)} | area {label(row.area, True)}"
        )
    assert sorted(seen) == list(X.index)
    assert any("?" in ax.get_title() for ax in fig.axes)


def test_show_batch_augments_as_in_training_reproducibly(fitted, image_set):
    augmenting = copy.copy(fitted).set_params(augment=True)
    X, y = image_set.head(8), image_set[["color"]].head(8)
    torch_state = torch.random.get_rng_state()

    first = show_batch(augmenting, X, y, n=4, random_state=0)
    again = show_batch(augmenting, X, y, n=4, random_state=0)
    plain = show_batch(fitted, X, y, n=4, random_state=0)

    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert first.get_suptitle() == "Training images at 16×16 px, augmented"
    images = [[shown(ax) for ax in fig.axes] for fig in (first, again, plain)]
    assert all(np.array_equal(a, b) for a, b in zip(images[0], images[1], strict=True))
    assert [ax.get_title() for ax in plain.axes] == [ax.get_title() for ax in first.axes]
    assert not all(np.array_equal(a, b) for a, b in zip(images[0], images[2], strict=True))


@pytest.mark.parametrize("params", [{"n": 0}, {"ncols": 0}, {"ncols": 1.5}])
def test_show_batch_refuses_a_bad_grid(fitted, image_set, params):
    name = next(iter(params))
    with pytest.raises(
        ValueError, match=rf"The '{name}' parameter of show_batch must be an int in the range"
    ):
        show_batch(fitted, image_set, image_set[TARGETS], **params)


@pytest.mark.parametrize(
    "plot, args",
    [
        (plot_top_losses, {"task": "color"}),
        (plot_history, None),
        (plot_confusion_matrix, {"task": "color"}),
        (show_batch, {}),
        (plot_explain, None),
    ],
)
def test_an_unfitted_estimator_is_refused(image_set, plot, args):
    est = small_estimator(image_set)
    with pytest.raises(NotFittedError):
        if plot is plot_explain:
            plot(est, image_set, "color")
        else:
            plot(est) if args is None else plot(est, image_set, image_set[TARGETS], **args)


def test_figures_are_not_left_open_in_pyplot(fitted, image_set):
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    plot_history(fitted)
    plot_top_losses(fitted, image_set, image_set[TARGETS], k=2)
    plot_confusion_matrix(fitted, image_set, image_set[TARGETS], "color")
    assert plt.get_fignums() == open_before


def line_data(fig):
    return [
        (ax.get_title(), line.get_label(), *np.asarray(line.get_data(), float).tolist())
        for ax in fig.axes
        for line in ax.get_lines()
    ]


@pytest.mark.parametrize("how", ["safe file", "joblib"])
def test_a_loaded_model_plots_what_the_fitted_one_plots(fitted, image_set, tmp_path, how):
    loaded = reload(fitted, tmp_path, how)
    for plot in (plot_history, plot_lr_schedule):
        expected = line_data(plot(fitted))
        assert expected and line_data(plot(loaded)) == expected  # JSON keeps floats exactly
    y = image_set[TARGETS]
    top = [ax.get_title() for ax in plot_top_losses(fitted, image_set, y, k=4).axes]
    assert [ax.get_title() for ax in plot_top_losses(loaded, image_set, y, k=4).axes] == top
