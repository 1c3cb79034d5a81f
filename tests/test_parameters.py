"""The parameter table: each parameter declared once, and every place that spells one out
(the signature, the docstring, the config, the command line) checked against it, names
and defaults."""

import argparse
import ast
import inspect
import re
from pathlib import Path

from conftest import TORCH, run_python_without
from sklearn.utils._param_validation import validate_parameter_constraints

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.cli._options import COMMAND_OPTIONS, add_options, estimator_params
from sk_multitask.network._loss import LOSS_WEIGHTINGS, REGRESSION_LOSSES
from sk_multitask.training._config import TrainingConfig
from sk_multitask.training._net import OPTIMIZERS
from sk_multitask.training._parameters import (
    DEFAULTS,
    FINGERPRINT_PARAMS,
    PARAMETERS,
    RUNTIME_PARAMS,
    SECRET_PARAMS,
    parameter_constraints,
)
from sk_multitask.training.callbacks import LR_SCHEDULES

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _differing(defaults):
    """The names whose default in ``defaults`` is not the table's, with both values; a
    value of another type counts (``10.0`` is not the default ``10``)."""
    return {
        name: (value, DEFAULTS[name])
        for name, value in defaults.items()
        if type(value) is not type(DEFAULTS[name]) or value != DEFAULTS[name]
    }


def documented_defaults(obj):
    """Name to default of the Parameters section of ``obj``'s numpydoc docstring, in order
    (``name : type, default=value``)."""
    doc = inspect.getdoc(obj)
    section = re.search(r"^Parameters\n-+\n(.*?)^\S[^\n]*\n-+$", doc, re.MULTILINE | re.DOTALL)
    defaults = {}
    for line in section.group(1).splitlines():
        if line and not line[0].isspace():
            name, _, kind = line.partition(" : ")
            default = re.search(r"default=(.+)$", kind)
            assert default is not None, f"{name}: the docstring gives no default"
            defaults[name] = ast.literal_eval(default.group(1))
    return defaults


def test_the_signature_is_the_tables():
    parameters = inspect.signature(MultiTaskImageEstimator).parameters
    assert list(parameters) == list(PARAMETERS)
    assert not _differing({name: p.default for name, p in parameters.items()})


def test_the_docstring_documents_the_tables_parameters_and_defaults():
    documented = documented_defaults(MultiTaskImageEstimator)
    assert list(documented) == list(PARAMETERS)
    assert not _differing(documented)


def test_the_config_is_the_tables():
    config = TrainingConfig()
    assert list(vars(config)) == list(PARAMETERS)
    assert not _differing(vars(config))
    assert list(TrainingConfig.from_estimator(MultiTaskImageEstimator()).learning_params()) == (
        list(FINGERPRINT_PARAMS)
    )


def test_the_command_line_offers_the_tables_options_with_its_defaults():
    parser = argparse.ArgumentParser()
    add_options(parser, "fit")
    args = parser.parse_args(["data.csv", "--targets", "color", "--model", "m.joblib"])
    params = estimator_params(args)
    offered = {name: row.option for name, row in PARAMETERS.items() if row.option}
    flags = {o.parameter: o.flag for o in COMMAND_OPTIONS["fit"] if o.parameter}
    assert flags == offered | {"valid_split": "--valid-col"}  # the column, over the fraction
    assert list(params) == list(offered)
    assert not _differing(params)


def test_the_constraints_take_the_defaults_and_name_what_the_code_implements():
    constraints = parameter_constraints()
    assert list(constraints) == list(PARAMETERS)
    described = {name: list(map(str, c)) for name, c in constraints.items()}
    estimators = MultiTaskImageEstimator._parameter_constraints
    assert {name: list(map(str, c)) for name, c in estimators.items()} == described
    validate_parameter_constraints(constraints, DEFAULTS, "MultiTaskImageEstimator")
    assert PARAMETERS["optimizer"].choices == sorted(OPTIMIZERS)
    assert PARAMETERS["lr_schedule"].choices == sorted(LR_SCHEDULES)
    assert PARAMETERS["loss_weights"].choices == sorted(LOSS_WEIGHTINGS)
    assert PARAMETERS["regression_loss"].choices == sorted(REGRESSION_LOSSES)


def test_one_list_of_run_time_settings():
    # How this machine runs a model: never saved; tta changes predictions, so it is.
    assert set(RUNTIME_PARAMS) == {
        "checkpoint_dir", "num_workers", "cache_dir", "device", "callbacks", "verbose",
        "storage_options",
    }  # fmt: skip
    assert set(SECRET_PARAMS) == {"storage_options"}
    # The fingerprint leaves out what changes nothing a fit learns: the run-time settings
    # but the user's callbacks (which may), tta and the decision thresholds (what the
    # model predicts, decided after the network is trained).
    left_out = set(PARAMETERS) - set(FINGERPRINT_PARAMS)
    predicting = {"tta", "decision_thresholds", "threshold_metric"}
    assert left_out == set(RUNTIME_PARAMS) - {"callbacks"} | predicting


def test_the_deployment_page_names_the_run_time_settings():
    page = (DOCS / "deployment.md").read_text()
    section = page.split("### Run-time parameters come from the loader")[1]
    listed = section.split("(the run-time settings of the parameter table")[0]
    named = set(re.findall(r"`(\w+)`", listed)) & set(PARAMETERS)
    assert named == set(RUNTIME_PARAMS)


def test_the_table_imports_neither_torch_nor_scikit_learn():
    # The model document reads it, in the ONNX predictor too (the command line's
    # options too: the torch-free contract in pyproject.toml).
    result = run_python_without(
        """
        import sk_multitask.persistence._document
        from sk_multitask.training._parameters import RUNTIME_PARAMS
        print(len(RUNTIME_PARAMS))
        """,
        blocked={*TORCH, "sklearn"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(len(RUNTIME_PARAMS))
