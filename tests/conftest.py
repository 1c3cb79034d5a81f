"""Shared fixtures: one torch thread, seeded randomness, a small generated image set, small
estimators, and fitted models shared by the whole session (with copies to change)."""

import copy
import hashlib
import os
import pathlib

import numpy as np
import pytest
import torch
from hypothesis import settings

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.datasets import make_multitask_images

TARGETS = ["color", "shape", "area"]

# CI must pass every time: there (CI=true), hypothesis draws the same examples on every run
# and keeps no example database; locally it explores new examples on every run.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

# One torch thread in each test process and in the processes the tests start (they inherit
# OMP_NUM_THREADS): the tests' batches are tiny, and where the cores are busy (other jobs, or
# make test's one pytest-xdist worker per core) torch's threads only wait on each other: on a
# busy 2-core machine, the first 46 tests of tests/test_estimator.py took 206 s with torch's
# default of two threads, 19 s with one.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

#: Code to run first in a subprocess: importing the packages named in BLOCKED (a set
#: defined before it) then fails, as where they are not installed.
BLOCK_TORCH = """
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, _Blocked())
"""
TORCH = ("torch", "torchvision", "skorch")


def run_python_without(code, blocked=TORCH, timeout=300):
    """Run ``code`` (dedented) in a new Python process where importing any package of
    ``blocked`` fails; returns the ``subprocess.CompletedProcess`` (text output)."""
    import subprocess
    import sys
    import textwrap

    script = f"BLOCKED = {set(blocked)!r}\n{BLOCK_TORCH}\n{textwrap.dedent(code)}"
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)  # noqa: NPY002 -- random_state=None draws from the global RNG
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def image_set(tmp_path_factory):
    """160 images of 16 px with a fifth of the target cells missing (read-only: copy it)."""
    path = tmp_path_factory.mktemp("images")
    return make_multitask_images(160, image_size=16, missing_rate=0.2, path=path, random_state=0)


def small_estimator(df, **params):
    """The small CNN on 16 px images, two epochs: fast enough for every test."""
    defaults = dict(
        image_root=df.attrs["image_root"],
        backbone="simple_cnn",
        weights=None,
        image_size=16,
        max_epochs=2,
        batch_size=32,
        valid_split="is_valid",
        random_state=0,
    )
    return MultiTaskImageEstimator(**{**defaults, **params})


@pytest.fixture(scope="session")
def fitted_skip(image_set):
    """An estimator fitted on ``image_set`` with ``on_bad_image="skip"``, one epoch, shared
    by the whole session: read-only (a test that changes it takes ``fitted_skip_copy``)."""
    est = small_estimator(image_set, on_bad_image="skip", max_epochs=1)
    return est.fit(image_set, image_set[TARGETS])


@pytest.fixture(scope="session")
def fitted(image_set):
    """An estimator fitted on ``image_set``, shared by the whole session: read-only (a test
    that changes it takes ``fitted_copy``)."""
    return small_estimator(image_set).fit(image_set, image_set[TARGETS])


@pytest.fixture(scope="session")
def fitted_onnx(fitted, tmp_path_factory):
    """``fitted`` exported to ONNX once for the session: the file's path (read-only)."""
    return pathlib.Path(fitted.export_onnx(tmp_path_factory.mktemp("onnx") / "model.onnx"))


@pytest.fixture
def fitted_copy(fitted):
    """A copy of ``fitted`` of its own (through its pickle: the model document), to change."""
    return copy.deepcopy(fitted)


@pytest.fixture
def fitted_skip_copy(fitted_skip):
    """A copy of ``fitted_skip`` of its own, to change."""
    return copy.deepcopy(fitted_skip)


SHARED = ("fitted", "fitted_skip")


def _fingerprint(est):
    """What a test could change in a fitted estimator: its parameters, which object each
    attribute holds, the network's and the criterion's tensors, the history's length."""
    tensors = hashlib.sha256()
    for module in (est.net_.module_, est.net_.criterion_):
        for name, value in module.state_dict().items():
            tensors.update(name.encode())
            tensors.update(value.detach().cpu().numpy().tobytes())
    return (
        repr(sorted(est.get_params(deep=False).items())),
        {name: id(value) for name, value in vars(est).items()},
        {name: id(value) for name, value in vars(est.net_).items()},
        tensors.hexdigest(),
        len(est.history_),
    )


@pytest.fixture(autouse=True)
def _shared_models_unchanged(request):
    """A test that changes a session-wide model fails, naming the copy to take instead:
    otherwise it would change what the tests after it see."""
    shared = {n: request.getfixturevalue(n) for n in SHARED if n in request.fixturenames}
    before = {name: _fingerprint(est) for name, est in shared.items()}
    yield
    for name, est in shared.items():
        assert _fingerprint(est) == before[name], f"the test changed {name}: take {name}_copy"


def reload(est, folder, how):
    """``est`` saved to ``folder`` and loaded back: ``how`` is "safe file" or "joblib"."""
    import joblib

    from sk_multitask import load

    if how == "safe file":
        return load(est.save(folder / "model.skmt"))
    joblib.dump(est, folder / "model.joblib")
    return joblib.load(folder / "model.joblib")
