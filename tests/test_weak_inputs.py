"""Weak cases of the estimator's parameters and data (issue 26): each refused in one line
naming its cause before any work is done, or handled so that the result is usable."""

import pytest
from conftest import TARGETS, small_estimator


@pytest.mark.parametrize("name", ["max_epochs", "batch_size", "patience", "lr", "tta"])
def test_a_boolean_is_not_a_number(image_set, name):
    est = small_estimator(image_set, **{name: True})
    with pytest.raises(ValueError, match=rf"'{name}' parameter .* must be .*Got True instead"):
        est.fit(image_set, image_set[TARGETS])
