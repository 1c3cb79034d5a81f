"""Images and table columns in one X (``tabular_cols``): the one encoder, the fusion, the
files, the bad inputs, the permutation importance (sk_multitask.inputs._tabular)."""

import copy
import json
import pathlib
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import small_estimator
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sk_multitask import load
from sk_multitask.datasets import make_multitask_images
from sk_multitask.exceptions import TableColumnWarning
from sk_multitask.inputs._tabular import TableEncoder, fit_table_encoder
from sk_multitask.onnx import OnnxPredictor
from sk_multitask.persistence._document import parse_document

TARGETS = ["color", "area"]
TABLE = ["z", "group", "count"]


def with_table(df, seed=0):
    """``df`` with a number ``z`` (some missing), a category ``group`` (some missing) and
    an integer ``count``."""
    rng = np.random.default_rng(seed)
    df = df.copy()
    df["z"] = rng.normal(size=len(df))
    df.loc[df.index[::7], "z"] = np.nan
    df["group"] = pd.Series(rng.choice(["a", "b", "c"], len(df)), dtype=object)
    df.loc[df.index[::11], "group"] = None
    df["count"] = rng.integers(0, 5, len(df))
    return df


@pytest.fixture(scope="module")
def table_set(image_set):
    return with_table(image_set)


@pytest.fixture(scope="module")
def fitted_table(table_set):
    """A model of images and table columns, shared by this module: read-only."""
    est = small_estimator(table_set, tabular_cols=TABLE)
    return est.fit(table_set, table_set[TARGETS])


def awkward_rows(df):
    """Rows with an unseen category, missing values, and dtypes other than fit's."""
    rows = df.head(12).copy()
    rows.loc[rows.index[0], "group"] = "never seen"
    rows.loc[rows.index[1], "group"] = None
    rows.loc[rows.index[2], "z"] = np.nan
    rows["count"] = rows["count"].astype(float)  # int -> float
    rows["group"] = rows["group"].astype("category")  # object -> category
    return rows


# -- the one encoder ---------------------------------------------------------------------


def test_encoder_is_scikit_learns_preprocessing(table_set):
    """The numpy encoding from the exported state equals scikit-learn's own transform."""
    train, new = table_set.iloc[:100], awkward_rows(table_set)
    encoder = fit_table_encoder(train[TABLE])
    marker = "\uffff<missing>"

    def coded(frame):
        frame = frame.copy()
        frame["group"] = frame["group"].astype(object).where(frame["group"].notna(), marker)
        return frame

    reference = ColumnTransformer([
        ("numbers", make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True), StandardScaler()
        ), ["z", "count"]),
        ("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["group"]),
    ]).fit(coded(train[TABLE]))
    for frame in (train, new):
        with warnings.catch_warnings():  # scikit-learn warns of the unknown category
            warnings.simplefilter("ignore", UserWarning)
            expected = reference.transform(coded(frame[TABLE]))
        np.testing.assert_allclose(encoder.encode(frame[TABLE]), expected, rtol=1e-5, atol=1e-6)
    assert encoder.feature_names() == [
        "z", "count", "z_missing", "group=a", "group=b", "group=c", "group=<NA>"
    ]
    again = TableEncoder.from_dict(TABLE, json.loads(json.dumps(encoder.to_dict())))
    np.testing.assert_array_equal(again.encode(new[TABLE]), encoder.encode(new[TABLE]))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: s["numeric"].update(scales=[0.0] * len(s["numeric"]["scales"])), "numeric"),
        (lambda s: s["numeric"].update(indicators=[9]), "numeric"),
        (lambda s: s["categorical"][0].update(categories=[1, 2]), "categorical"),
        (lambda s: s["categorical"][0].update(column="other"), "columns"),
        (lambda s: s.update(extra=1), "numeric, categorical"),
    ],
)
def test_a_crafted_encoder_state_is_refused(table_set, change, match):
    state = fit_table_encoder(table_set[TABLE]).to_dict()
    change(state)
    with pytest.raises(TypeError, match=match):
        TableEncoder.from_dict(TABLE, state)


@pytest.mark.parametrize("values", [[np.nan] * 6, [3.0] * 6, ["x"] * 6])
def test_an_uninformative_column_is_named_by_a_warning(values):
    frame = pd.DataFrame({"useless": values, "good": [1.0, 2, 3, 4, 5, 6]})
    with pytest.warns(TableColumnWarning, match="'useless'"):
        encoder = fit_table_encoder(frame)
    assert np.isfinite(encoder.encode(frame)).all()


# -- the estimator -----------------------------------------------------------------------


def test_a_table_model_predicts_transforms_and_reports_its_columns(fitted_table, table_set):
    rows = awkward_rows(table_set)
    predictions = fitted_table.predict(rows)
    assert predictions["area"].notna().all() and np.isfinite(predictions["area"]).all()
    features = fitted_table.transform(rows)
    assert features.shape == (len(rows), 256)  # the fusion MLP's width
    assert len(fitted_table.get_feature_names_out()) == 256
    top = fitted_table.top_losses(table_set, table_set[TARGETS], k=4)
    assert list(top.columns[:4]) == ["image", *TABLE]
    np.testing.assert_array_equal(top["count"], table_set.loc[top.index, "count"])
    assert fitted_table.net_.module_.n_table == fitted_table.table_encoder_.n_features == 7


def test_a_model_without_a_table_is_unchanged(fitted):
    module = fitted.net_.module_
    assert module.n_table == 0 and not hasattr(module, "fusion")
    assert fitted.table_encoder_ is None
    from sk_multitask.persistence._document import model_document

    assert "tabular" not in model_document(fitted)


def test_saved_pickled_and_onnx_models_predict_alike(fitted_table, table_set, tmp_path):
    """Must show: the safe file, joblib and the ONNX predictor, on rows with unseen
    categories, missing values and changed dtypes."""
    rows = awkward_rows(table_set)
    expected = fitted_table.predict(rows)
    joblib.dump(fitted_table, tmp_path / "model.joblib")
    models = [
        load(fitted_table.save(tmp_path / "model.skmt")),
        joblib.load(tmp_path / "model.joblib"),
        OnnxPredictor(fitted_table.export_onnx(tmp_path / "model.onnx")),
    ]
    for model in models:
        got = model.predict(rows)
        assert got["color"].equals(expected["color"])
        np.testing.assert_allclose(got["area"], expected["area"], atol=1e-4)
    import onnx

    graph = onnx.load(tmp_path / "model.onnx").graph
    assert [node.name for node in graph.input] == ["images", "table"]


def test_table_importance_is_shared_by_the_estimator_and_the_onnx_predictor(
    fitted_table, table_set, tmp_path
):
    drops = fitted_table.table_importance(table_set, table_set[TARGETS], n_repeats=2)
    assert list(drops.columns) == TABLE and list(drops.index) == TARGETS
    onnx_drops = OnnxPredictor(fitted_table.export_onnx(tmp_path / "m.onnx")).table_importance(
        table_set, table_set[TARGETS], n_repeats=2
    )
    pd.testing.assert_frame_equal(drops, onnx_drops, atol=1e-4)
    with pytest.raises(ValueError, match="n_repeats"):
        fitted_table.table_importance(table_set, table_set[TARGETS], n_repeats=0)


def test_table_importance_needs_table_columns(fitted, image_set):
    with pytest.raises(ValueError, match="no table columns"):
        fitted.table_importance(image_set, image_set[["color"]])


def test_a_missing_table_column_at_predict_is_named(fitted_table, table_set):
    with pytest.raises(ValueError, match="table column 'group' .* is not in X"):
        fitted_table.predict(table_set.drop(columns="group"))
    with pytest.raises(ValueError, match="X must be a DataFrame"):
        fitted_table.predict(list(table_set["filename"]))


@pytest.mark.parametrize(
    ("cols", "match"),
    [
        (["z", "color"], "'color' is both a target"),
        (["z", "filename"], "image column"),
        (["z", "is_valid"], "valid_split column"),
        (["z", "z"], "twice"),
        ([], "non-empty list"),
        (["z", "absent"], "'absent'"),
    ],
)
def test_bad_tabular_cols_are_refused(table_set, cols, match):
    est = small_estimator(table_set, tabular_cols=cols)
    with pytest.raises(ValueError, match=match):
        est.fit(table_set, table_set[TARGETS])
    assert not hasattr(est, "net_")


def test_a_transformer_of_the_users_pickles_but_is_not_saved(table_set, tmp_path):
    transformer = ColumnTransformer([
        ("z", make_pipeline(SimpleImputer(), StandardScaler()), ["z"]),
        ("group", OneHotEncoder(handle_unknown="ignore"), ["group"]),
    ])
    frame = table_set.assign(group=table_set["group"].fillna("none"))
    est = small_estimator(
        frame, tabular_cols=["z", "group"], tabular_transformer=transformer, max_epochs=1
    ).fit(frame, frame[TARGETS])
    assert not hasattr(transformer, "transformers_")  # cloned, never fitted itself
    with pytest.raises(ValueError, match="tabular_transformer .ColumnTransformer. is code"):
        est.save(tmp_path / "model.skmt")
    with pytest.raises(ValueError, match="tabular_transformer .ColumnTransformer. is code"):
        est.export_onnx(tmp_path / "model.onnx")
    expected = est.predict(frame)
    joblib.dump(est, tmp_path / "model.joblib")
    pd.testing.assert_frame_equal(joblib.load(tmp_path / "model.joblib").predict(frame), expected)
    import skops.io

    skops.io.dump(est, tmp_path / "model.skops")
    trusted = skops.io.get_untrusted_types(file=tmp_path / "model.skops")
    loaded = skops.io.load(tmp_path / "model.skops", trusted=trusted)
    pd.testing.assert_frame_equal(loaded.predict(frame), expected)


def test_partial_fit_and_clone_keep_the_table(table_set):
    est = small_estimator(table_set, tabular_cols=TABLE, valid_split=None)
    est.partial_fit(table_set, table_set[TARGETS])
    encoder = est.table_encoder_
    est.partial_fit(table_set.iloc[:64], table_set[TARGETS].iloc[:64])
    assert est.table_encoder_ is encoder and len(est.history_) == 2
    assert clone(est).get_params()["tabular_cols"] == TABLE
    est.set_params(tabular_cols=["z"])
    with pytest.raises(ValueError, match="tabular_cols was changed after fit"):
        est.partial_fit(table_set, table_set[TARGETS])


def test_a_tabular_document_is_checked(fitted_table):
    from sk_multitask.persistence._document import model_document

    document = copy.deepcopy(model_document(fitted_table))
    parse_document(document, "model.skmt")  # as written: read
    document["tabular"]["n_encoded"] = 3
    with pytest.raises(ValueError, match="not n_encoded"):
        parse_document(document, "model.skmt")


def test_the_fusion_learns_an_xor_that_images_alone_cannot(tmp_path):
    """A target that is an image attribute XOR a table category: only the fusion of the
    two learns it (the images alone are at chance)."""
    df = make_multitask_images(
        240, image_size=16, missing_rate=0.0, path=tmp_path, random_state=1
    )
    rng = np.random.default_rng(1)
    df["flag"] = rng.choice(["on", "off"], len(df))
    df["xor"] = df["color"].isin(["blue", "green"]) ^ (df["flag"] == "on")
    train, test = df.iloc[:160], df.iloc[160:]  # scored on rows the fit never saw
    scores = {}
    for cols in (None, ["flag"]):
        est = small_estimator(
            df, tabular_cols=cols, valid_split=None, max_epochs=12, lr=1e-2, fusion_width=64
        )
        est.fit(train, train[["xor", "color"]])
        scores[cols is not None] = est.score(test, test[["xor"]])
    assert scores[False] < 0.7 < 0.9 < scores[True]


def test_a_number_column_holding_text_at_predict_is_named(fitted_table, table_set):
    rows = table_set.head(4).assign(z=["1.5", "2", "n/a?", "0"])
    with pytest.raises(ValueError, match="table column 'z' was numeric in fit"):
        fitted_table.predict(rows)
    # Numbers written as text are numbers.
    texts = table_set.head(4).assign(z=table_set["z"].head(4).astype(str))
    np.testing.assert_allclose(
        fitted_table.predict(texts)["area"], fitted_table.predict(table_set.head(4))["area"],
        rtol=1e-5,
    )


def test_a_transformer_returning_missing_values_is_refused(table_set):
    from sklearn.preprocessing import FunctionTransformer

    est = small_estimator(
        table_set, tabular_cols=["z"], max_epochs=1,
        tabular_transformer=FunctionTransformer(lambda frame: frame.to_numpy(float)),
    )
    with pytest.raises(ValueError, match="returned missing or infinite values"):
        est.fit(table_set, table_set[TARGETS])
    assert not hasattr(est, "net_")


def test_the_table_reaches_lr_find_weights_and_intervals(table_set):
    est = small_estimator(table_set, tabular_cols=TABLE, max_epochs=1)
    history, lr = est.lr_find(table_set, table_set[TARGETS], num_it=5)
    assert len(history) == 5 and lr > 0
    weights = np.linspace(0.5, 1.5, len(table_set))
    est.fit(table_set, table_set[TARGETS], sample_weight=weights)
    intervals = est.predict_interval(awkward_rows(table_set), coverage=0.8)
    assert intervals[("area", "lower")].notna().all()


def test_the_command_line_fits_and_predicts_with_table_columns(table_set, tmp_path, capsys):
    from sk_multitask.cli import main

    table_set.to_csv(tmp_path / "data.csv", index=False)
    common = [
        "fit", str(tmp_path / "data.csv"), "--images", table_set.attrs["image_root"],
        "--targets", "color,area", "--backbone", "simple_cnn", "--weights", "none",
        "--epochs", "1", "--image-size", "16", "--seed", "0",
    ]
    assert main([*common, "--tabular", "z,absent", "--model", str(tmp_path / "m.skmt")]) == 1
    assert "table column 'absent' (--tabular) is not in X" in capsys.readouterr().err
    assert main([*common, "--tabular", "z,group", "--model", str(tmp_path / "m.skmt")]) == 0
    assert load(tmp_path / "m.skmt").table_encoder_.columns == ["z", "group"]
    out = tmp_path / "predictions.csv"
    status = main(["predict", str(tmp_path / "data.csv"), "--model", str(tmp_path / "m.skmt"),
                   "--out", str(out)])
    assert status == 0 and len(pd.read_csv(out)) == len(table_set)


def test_a_search_tunes_the_fusion(table_set):
    from sklearn.model_selection import GridSearchCV

    est = small_estimator(table_set, tabular_cols=TABLE, max_epochs=1, valid_split=None)
    search = GridSearchCV(est, {"fusion_width": [8, 16]}, cv=2).fit(
        table_set, table_set[TARGETS]
    )
    assert search.best_estimator_.net_.module_.fusion[1].out_features in (8, 16)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_the_mlflow_pyfunc_takes_the_table_columns(fitted_table, table_set, tmp_path):
    import base64

    import mlflow

    from sk_multitask import mlflow as sk_mlflow

    sk_mlflow.save_model(fitted_table, tmp_path / "model")
    inputs = mlflow.models.Model.load(tmp_path / "model").signature.inputs.to_dict()
    assert {(c["name"], c["type"]) for c in inputs} >= {("z", "double"), ("group", "string")}
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    rows = table_set.iloc[:3]
    root = table_set.attrs["image_root"]
    files = [(pathlib.Path(root) / name).read_bytes() for name in rows["filename"]]
    request = rows[TABLE].astype({"count": float}).assign(  # a double, as the signature says
        image_base64=[base64.b64encode(data).decode("ascii") for data in files]
    )
    pd.testing.assert_frame_equal(model.predict(request), fitted_table.predict(rows))
    with pytest.raises(mlflow.exceptions.MlflowException, match="table column 'group'"):
        model.predict(request.drop(columns="group"))


def test_the_report_and_the_top_losses_figure_show_the_table(fitted_table, table_set, tmp_path):
    from sk_multitask.plotting import plot_top_losses
    from sk_multitask.report import write_report

    html = write_report(fitted_table, table_set, table_set[TARGETS], tmp_path / "r.html")
    page = html.read_text(encoding="utf-8")
    assert "Table columns: permutation importance" in page and "<th>group</th>" in page
    fig = plot_top_losses(fitted_table, table_set, table_set[TARGETS], k=2)
    titles = [ax.get_title() for ax in fig.axes]
    assert all("z=" in title and "group=" in title for title in titles)


def test_explain_and_int8_export_take_the_table(fitted_table, table_set, tmp_path):
    heatmaps = fitted_table.explain(table_set.head(3), "color")
    assert heatmaps.shape == (3, 16, 16) and np.isfinite(heatmaps).all()
    exported = fitted_table.export_onnx(
        tmp_path / "int8.onnx", quantize="int8", calibration_X=table_set,
        calibration_y=table_set[TARGETS],
    )
    path = exported[0] if isinstance(exported, tuple) else exported
    predictions = OnnxPredictor(path).predict(awkward_rows(table_set))
    assert predictions["area"].notna().all()


def test_tta_caches_calibration_and_a_pipeline_take_the_table(table_set, tmp_path):
    """The image-only machinery (test-time views, the memory and disk caches) leaves the
    table as it is, and calibration and a Pipeline see it: each row keeps its own values."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    rows = awkward_rows(table_set)
    est = small_estimator(table_set, tabular_cols=TABLE, max_epochs=1, cache=True,
                          cache_dir=str(tmp_path / "cache"))
    est.fit(table_set, table_set[TARGETS])
    def raw(X):
        return np.hstack(list(est.predict_raw(X)[0].values()))

    plain = raw(rows)
    est.set_params(tta=2)
    viewed = raw(rows)
    assert viewed.shape == plain.shape and np.isfinite(viewed).all()
    assert not np.allclose(viewed, plain)  # the images were augmented: other outputs
    est.set_params(tta=0)
    # The table changes the outputs row by row: swapping two rows' table values moves them.
    swapped = rows.copy()
    swapped[TABLE] = rows[TABLE].iloc[::-1].to_numpy()
    assert not np.allclose(raw(swapped), plain)
    est.calibrate(table_set, table_set[TARGETS])
    assert est.predict_proba(rows)["color"].notna().all().all()
    pipe = make_pipeline(FunctionTransformer(lambda df: df.copy()), est)
    pd.testing.assert_frame_equal(pipe.predict(rows), est.predict(rows))
