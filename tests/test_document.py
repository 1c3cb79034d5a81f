"""The model document: what it records, and the checks before anything is built."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
from conftest import TARGETS, TORCH, run_python_without

from sk_multitask.persistence._document import (
    MAX_DOCUMENT_BYTES,
    model_document,
    parse_document,
    read_document,
)
from sk_multitask.persistence._schema import FORMAT_VERSION
from sk_multitask.targets._outputs import OutputDecoder
from sk_multitask.training._parameters import RUNTIME_PARAMS


@pytest.fixture(scope="module")
def document(fitted):
    return model_document(fitted)


def test_the_document_records_what_the_model_knows(fitted):
    est = copy.copy(fitted)
    est.best_epoch_, est.skipped_images_ = 2, ["broken.jpg"]
    document = json.loads(json.dumps(model_document(est)))  # JSON as it is
    assert document["format_version"] == FORMAT_VERSION == 2
    assert document["best_epoch"] == 2 and document["skipped_images"] == ["broken.jpg"]
    assert document["class_weights"] == []
    assert document["data_sizes"]["index"] == ["rows", *TARGETS]
    assert set(document["versions"]) == {"sk_multitask", "torch", "skorch", "scikit-learn"}
    assert [row["epoch"] for row in document["history"]] == [1, 2]
    model = parse_document(document, "m.skmt")
    pd.testing.assert_frame_equal(model.data_sizes, fitted.data_sizes_)
    assert model.fitted_attributes()["best_epoch_"] == 2
    assert "best_epoch_" not in parse_document(model_document(fitted), "m").fitted_attributes()


@pytest.mark.parametrize(
    "change, match",
    [
        ({"image_size": [16]}, "image_size is not two integers from 1 to 4096"),
        ({"image_size": [7000, 7000]}, "image_size is not two integers from 1 to 4096"),
        ({"weights": "x"}, r"unknown keys \['weights'\]"),
        ({"tasks": []}, "tasks is not a list of tasks"),
        ({"best_epoch": "2"}, "best_epoch is not a count"),
        ({"skipped_images": [1]}, "skipped_images is not a list"),
        ({"data_sizes": {"index": [], "columns": []}}, "data_sizes is not a table"),
        (
            {"data_sizes": {"index": ["rows"], "columns": ["train"], "data": [[1, 2]]}},
            "columns passed",
        ),
        ({"history": {"epoch": 1}}, "history is not a list of dicts"),
        ({"class_weights": {"shape": [1]}}, r"class_weights is not a list of \[task"),
    ],
)
def test_a_document_of_wrong_types_is_refused_before_anything_is_built(document, change, match):
    with pytest.raises(ValueError, match=f"'m.skmt': the model document is incomplete.*{match}"):
        parse_document(document | change, "m.skmt")


def with_task(document, **change):
    """``document`` with its first task (a classification) changed."""
    return document | {"tasks": [document["tasks"][0] | change, *document["tasks"][1:]]}


@pytest.mark.parametrize(
    "change, match",
    [
        ({"classes": {"dtype": "<U50000000", "values": ["a", "b"]}}, "dtype '<U50000000'"),
        ({"classes": {"dtype": "<M8[ns]", "values": [1, 2]}}, r"dtype '<M8\[ns\]', not one"),
        ({"classes": {"dtype": "<i8", "values": ["a", "b"]}}, "invalid literal"),
        ({"classes": {"dtype": "<i8", "values": []}}, "has no classes"),
        ({"classes": {"dtype": "<i8", "values": [[1]]}}, "is not an array"),
        ({"dtype": {"name": "<U50000000"}}, "dtype '<U50000000', not a number"),
        ({"kind": "ranking"}, "has an unknown kind"),
        ({"name": None}, "a task has no name"),
        ({"extra": 1}, "a task is not a task"),
    ],
)
def test_a_task_outside_the_schema_is_refused(document, change, match):
    with pytest.raises(ValueError, match=f"'m.skmt': the model document is incomplete.*{match}"):
        parse_document(with_task(document, **change), "m.skmt")


def test_string_classes_take_the_width_of_their_longest_value(document):
    classes = {"dtype": "<U5", "values": ["short", "abc"]}
    model = parse_document(with_task(document, classes=classes), "m")
    assert model.tasks(OutputDecoder.from_dict)["color"].classes.dtype == np.dtype("<U5")
    with pytest.raises(ValueError, match="dtype '<U6'"):
        parse_document(with_task(document, classes=classes | {"dtype": "<U6"}), "m")


def test_run_time_parameters_are_neither_written_nor_read(fitted, document):
    assert not set(RUNTIME_PARAMS) & set(document["params"])
    hostile = {"cache_dir": "/tmp/x", "num_workers": 64, "device": "cuda:7", "callbacks": [1]}
    model = parse_document(document | {"params": document["params"] | hostile}, "m")
    assert not set(RUNTIME_PARAMS) & set(model.params)
    assert model.params["batch_size"] == fitted.batch_size


def test_a_document_over_the_cap_or_nested_too_deeply_is_refused(document):
    raw = json.dumps(document)
    assert read_document(raw, "m").image_size == (16, 16)
    with pytest.raises(ValueError, match=f"'m': the model document is over {MAX_DOCUMENT_BYTES}"):
        read_document(raw + " " * MAX_DOCUMENT_BYTES, "m")
    with pytest.raises(ValueError, match="'m': the model document is not valid JSON"):
        read_document("[" * 100_000 + "]" * 100_000, "m")


def test_a_newer_format_version_is_refused_naming_both_versions(document):
    newer = document | {"format_version": FORMAT_VERSION + 1, "versions": {"sk_multitask": "9.0"}}
    match = (
        f"'m.skmt' has format version {FORMAT_VERSION + 1}, written by sk-multitask 9.0; "
        f"this sk-multitask .* reads format versions up to {FORMAT_VERSION}"
    )
    with pytest.raises(ValueError, match=match):
        parse_document(newer, "m.skmt")


def test_the_document_is_read_without_torch_or_scikit_learn(document, tmp_path):
    saved = tmp_path / "document.json"
    saved.write_text(json.dumps(document))
    code = f"""
import json
from sk_multitask.persistence._document import parse_document
document = json.loads(open({str(saved)!r}).read())
model = parse_document(document, "m.skmt")
print(model.image_size, list(model.data_sizes.columns), len(model.history))
"""
    result = run_python_without(code, blocked=(*TORCH, "sklearn"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["(16,", "16)", "['train',", "'valid']", "2"]
