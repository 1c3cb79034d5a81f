"""The model document: what it records, and the checks before anything is built."""

import copy
import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import BLOCK_TORCH, TARGETS

from sk_multitask.document import FORMAT_VERSION, model_document, parse_document


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
        ({"image_size": [16]}, "image_size is not two positive integers"),
        ({"best_epoch": "2"}, "best_epoch is not a count"),
        ({"skipped_images": [1]}, "skipped_images is not a list of strings"),
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


def test_the_document_is_read_without_torch_or_scikit_learn(document, tmp_path):
    saved = tmp_path / "document.json"
    saved.write_text(json.dumps(document))
    code = f"""BLOCKED = {{"torch", "torchvision", "skorch", "sklearn"}}
{BLOCK_TORCH}
import json
from sk_multitask.document import parse_document
document = json.loads(open({str(saved)!r}).read())
model = parse_document(document, "m.skmt")
print(model.image_size, list(model.data_sizes.columns), len(model.history))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["(16,", "16)", "['train',", "'valid']", "2"]
