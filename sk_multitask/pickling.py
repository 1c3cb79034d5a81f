"""Version checks of pickles: a pickled estimator records the versions that wrote it.

A joblib or pickle file of the estimator holds, beside its state, the model document's
``versions`` record (:func:`sk_multitask.document.package_versions`); loading it under
another sk-multitask version warns with :class:`InconsistentVersionWarning`.
"""

from __future__ import annotations

import warnings

from sklearn.exceptions import InconsistentVersionWarning as SklearnInconsistentVersionWarning

from . import __version__
from .document import package_versions

__all__ = ["InconsistentVersionWarning", "VersionedPickleMixin"]

#: The key of the pickled state that holds the versions record.
VERSIONS_KEY = "_sk_multitask_versions"
#: The key pickles of sk-multitask 0.1.0 recorded the package version under.
_OLD_VERSION_KEY = "_sk_multitask_version"


class InconsistentVersionWarning(SklearnInconsistentVersionWarning):
    """A pickled estimator is loaded under another sk-multitask version than saved it.

    A subclass of scikit-learn's :class:`~sklearn.exceptions.InconsistentVersionWarning`
    (a filter for scikit-learn's warning catches it too): the model may break or
    predict differently. Retrain it, or use the version that saved it;
    :meth:`MultiTaskImageEstimator.save` writes a file that does not depend on the
    package's code.

    Parameters
    ----------
    estimator_name, current_version, original_version : str
        As the attributes.

    Attributes
    ----------
    estimator_name : str
    current_version : str
        The sk-multitask version loading the pickle.
    original_version : str
        The sk-multitask version that wrote it.
    """

    def __init__(self, *, estimator_name, current_version, original_version):
        super().__init__(
            estimator_name=estimator_name,
            current_sklearn_version=current_version,
            original_sklearn_version=original_version,
        )
        self.current_version = current_version
        self.original_version = original_version

    def __str__(self):
        return (
            f"Trying to unpickle estimator {self.estimator_name} from sk-multitask "
            f"version {self.original_version} when using version {self.current_version}. "
            "This might lead to breaking code or invalid results. Use at your own risk; "
            "est.save(path) writes a file that loads under any later version."
        )


class VersionedPickleMixin:
    """Records the package versions in pickles and warns when sk-multitask's differs on load."""

    def __getstate__(self):
        return {**super().__getstate__(), VERSIONS_KEY: package_versions()}

    def __setstate__(self, state):
        state = dict(state)
        versions = state.pop(VERSIONS_KEY, None) or {}
        original = versions.get("sk_multitask") or state.pop(
            _OLD_VERSION_KEY, "unknown (before 0.1.0)"
        )
        state.pop(_OLD_VERSION_KEY, None)
        if original != __version__:
            warnings.warn(
                InconsistentVersionWarning(
                    estimator_name=type(self).__name__,
                    current_version=__version__,
                    original_version=original,
                ),
                stacklevel=2,
            )
        super().__setstate__(state)
