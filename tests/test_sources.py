"""Image references from X: paths that are not image files are named by their cause."""

import pandas as pd
import pytest
from conftest import TARGETS, small_estimator

from sk_multitask.inputs._sources import resolve_images


def test_a_directory_given_as_an_image_is_called_a_directory(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(IsADirectoryError, match=r"image path '.*photos' is a directory, not an"):
        resolve_images(pd.Series(["photos"]), image_root=tmp_path)


@pytest.mark.parametrize("path", ["", "  "])
def test_an_empty_image_path_is_called_empty(tmp_path, path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"X has an empty image path at position 1"):
        resolve_images(["a.png", path], image_root=tmp_path, check_files=False)


def test_fit_names_a_directory_in_x(image_set):
    X = image_set.copy()
    X.loc[X.index[3], "filename"] = "."
    with pytest.raises(IsADirectoryError, match=r"is a directory, not an image file"):
        small_estimator(image_set).fit(X, image_set[TARGETS])
