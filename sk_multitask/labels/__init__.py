"""Know your labels: which labels look wrong, and which missing ones to label next.

- ``_out_of_fold`` (torch-free): folds among each task's labelled rows, a clone of the
  estimator fitted per fold, its predictions on the rows it held out;
- ``_issues`` (torch-free): :func:`find_label_issues`, each labelled cell judged against
  its out-of-fold prediction (cleanlab's confident learning for classes and labels, the
  residuals' robust spread for a regression);
- ``_suggest`` (torch-free): :func:`suggest_labels`, the missing cells ranked by the
  model's uncertainty.
"""

from .. import _lazy_exports

__getattr__, __dir__, __all__ = _lazy_exports(
    __name__,
    {
        "_issues": ["find_label_issues"],
        "_suggest": ["suggest_labels"],
    },
)
