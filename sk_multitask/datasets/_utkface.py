"""Loader for the UTKFace face images (labels parsed from the file names)."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pandas as pd

GENDERS = ("male", "female")
ETHNICITIES = ("White", "Black", "Asian", "Indian", "Others")
# [age]_[gender]_[race]_[date&time].jpg, with .chip.jpg for the aligned crops.
_NAME = re.compile(r"^(\d{1,3})_([01])_([0-4])_(\d+)\.jpg(\.chip\.jpg)?$", re.IGNORECASE)


def load_utkface(path):
    """Read the UTKFace labels from the image file names under ``path``.

    UTKFace names its images ``[age]_[gender]_[race]_[date&time].jpg.chip.jpg``:
    gender 0 is male and 1 female; race 0-4 is White, Black, Asian, Indian, Others.
    The images themselves are not read. Get the data set from its authors (it cannot
    be downloaded by this function) and pass the folder it unpacks to.

    Parameters
    ----------
    path : str or path
        Folder holding the images (searched recursively).

    Returns
    -------
    DataFrame
        Columns ``filename`` (relative to ``path``), ``age`` (float), ``gender``
        (``'male'``/``'female'``) and ``ethnicity``, sorted by file name; ``path``
        is in ``df.attrs["image_root"]``. Files whose names do not follow the
        pattern are skipped, with one warning that counts them.

    Examples
    --------
    >>> df = load_utkface("data/UTKFace")  # doctest: +SKIP
    >>> est.fit(df, df[["age", "gender", "ethnicity"]])  # doctest: +SKIP
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"UTKFace folder not found: {os.fspath(path)!r}")
    rows, skipped = [], []
    for file in sorted(root.rglob("*")):
        if not file.is_file():
            continue
        match = _NAME.match(file.name)
        if match is None:
            skipped.append(file.name)
            continue
        age, gender, race = (int(g) for g in match.groups()[:3])
        rows.append(
            (file.relative_to(root).as_posix(), float(age), GENDERS[gender], ETHNICITIES[race])
        )
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} file(s) whose names do not follow UTKFace's "
            f"[age]_[gender]_[race]_[date&time].jpg pattern, e.g. {skipped[0]!r}",
            UserWarning,
            stacklevel=2,
        )
    df = pd.DataFrame(rows, columns=["filename", "age", "gender", "ethnicity"])
    df.attrs["image_root"] = os.fspath(path)
    return df
