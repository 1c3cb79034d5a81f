"""The parameters that build the network are fixed by ``fit`` (issue 26, cause 1).

Setting one after ``fit`` leaves the fitted network as it is (``predict`` uses it), and
whatever would build on it or describe it with the new value refuses, naming the
parameter: ``partial_fit``, a ``warm_start`` fit, ``save``, the pickle, ``export_onnx``.
"""

import copy
import pickle

import numpy as np
import pandas as pd
import pytest
from conftest import TARGETS, small_estimator
from sklearn.preprocessing import StandardScaler

from sk_multitask import load
from sk_multitask.training._parameters import NETWORK_PARAMS, PARAMETERS

#: A value other than the small estimator's for each parameter that builds the network.
CHANGED = {
    "backbone": "resnet18",
    "weights": "DEFAULT",
    "image_size": 32,
    "tasks": {"area": "regression"},
    "loss_weights": "uncertainty",
    "class_weight": "balanced",
    "regression_loss": "l1",
    "tabular_cols": ["area"],
    "tabular_transformer": StandardScaler(),
    "fusion_width": 64,
    "fusion_depth": 2,
}
REFUSED = r"backbone was changed after fit from 'simple_cnn' to 'resnet18'.*fit again"


@pytest.fixture(scope="module")
def rows(image_set):
    return image_set.iloc[:48]


@pytest.fixture(scope="module")
def fitted_once(rows):
    """One epoch on 48 rows, warm_start on (a pickle keeps the optimizer)."""
    est = small_estimator(rows, max_epochs=1, valid_split=None, warm_start=True)
    return est.fit(rows, rows[TARGETS])


@pytest.fixture
def changed(fitted_once):
    """A copy of the fitted estimator with its backbone set to another one."""
    return copy.deepcopy(fitted_once).set_params(backbone="resnet18")


def test_the_table_marks_the_parameters_that_build_the_network():
    assert set(NETWORK_PARAMS) == set(CHANGED)
    assert not any(PARAMETERS[name].runtime for name in NETWORK_PARAMS)


def test_fit_records_them(fitted_once):
    assert fitted_once.network_params_ == {
        name: fitted_once.get_params()[name] for name in NETWORK_PARAMS
    }


def test_save_and_pickle_refuse_a_changed_backbone(changed, tmp_path):
    path = tmp_path / "m.skmt"
    with pytest.raises(ValueError, match="^save: " + REFUSED):
        changed.save(path)
    assert not path.exists()
    with pytest.raises(ValueError, match="^pickle: " + REFUSED):
        pickle.dumps(changed)


def test_continued_fits_refuse_a_changed_backbone_before_reading_any_image(changed, rows):
    history = list(changed.history_)
    broken = rows.assign(filename="missing.png")  # read, it would fail otherwise
    with pytest.raises(ValueError, match="^partial_fit: " + REFUSED):
        changed.partial_fit(broken, broken[TARGETS])
    with pytest.raises(ValueError, match="^warm_start: " + REFUSED):
        changed.fit(broken, broken[TARGETS])
    assert list(changed.history_) == history


def test_export_onnx_refuses_a_changed_backbone(changed, tmp_path):
    pytest.importorskip("onnxscript")
    path = tmp_path / "m.onnx"
    with pytest.raises(ValueError, match="^export_onnx: " + REFUSED):
        changed.export_onnx(path)
    assert not path.exists()


def test_predict_keeps_using_the_fitted_network(fitted_once, changed, rows):
    pd.testing.assert_frame_equal(changed.predict(rows), fitted_once.predict(rows))


@pytest.mark.parametrize("name", list(CHANGED))
def test_every_parameter_that_builds_the_network_is_fixed(fitted_once, name, tmp_path):
    est = copy.deepcopy(fitted_once).set_params(**{name: CHANGED[name]})
    with pytest.raises(ValueError, match=rf"^save: {name} was changed after fit from "):
        est.save(tmp_path / "m.skmt")


@pytest.mark.parametrize("size", [16, (16, 16), np.array([16, 16]), "auto"])
def test_an_image_size_that_stands_for_the_fitted_one_is_no_change(fitted_once, size):
    est = copy.deepcopy(fitted_once).set_params(image_size=size)
    assert pickle.loads(pickle.dumps(est)).image_size_ == (16, 16)


def test_other_parameters_may_change_after_fit(fitted_once, rows, tmp_path):
    est = copy.deepcopy(fitted_once).set_params(lr=1e-2, max_epochs=2, batch_size=16)
    loaded = load(est.save(tmp_path / "m.skmt"))
    assert (loaded.lr, loaded.max_epochs) == (1e-2, 2)
    pickle.loads(pickle.dumps(est))
    est.partial_fit(rows, rows[TARGETS])
    est.fit(rows, rows[TARGETS])  # warm_start: two more epochs
    assert len(est.history_) == 4


def test_a_loaded_model_knows_them_and_refuses_too(fitted_once, tmp_path):
    for loaded in (
        load(fitted_once.save(tmp_path / "m.skmt")),
        pickle.loads(pickle.dumps(fitted_once)),
    ):
        assert loaded.network_params_ == fitted_once.network_params_
        with pytest.raises(ValueError, match="^save: " + REFUSED):
            loaded.set_params(backbone="resnet18").save(tmp_path / "again.skmt")


def test_a_full_fit_builds_anew_with_the_new_values(fitted_once, rows, tmp_path):
    est = copy.deepcopy(fitted_once).set_params(warm_start=False, regression_loss="l1")
    est.fit(rows, rows[TARGETS])
    assert est.network_params_["regression_loss"] == "l1"
    assert load(est.save(tmp_path / "m.skmt")).regression_loss == "l1"
