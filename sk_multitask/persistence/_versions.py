"""The warning of a pickle loaded under another version of the package (torch-free).

It subclasses scikit-learn's :class:`~sklearn.exceptions.InconsistentVersionWarning`, so
it lives apart from the pickles (which import torch): ``sk_multitask.exceptions`` imports
it from here on first use, with scikit-learn only.
"""

from sklearn.exceptions import InconsistentVersionWarning as SklearnInconsistentVersionWarning


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
