"""The images of flagged cells, for the report (torch-free; matplotlib inside)."""

from __future__ import annotations

from ..evaluation._figures import format_value, image_grid
from ..inputs._decoding import decode_image
from ..inputs._sources import input_table, resolve_images


def label_issues_figure(model, X, issues, ncols=4):
    """The image of each cell of ``issues`` (a :func:`find_label_issues` table whose
    ``row`` is the position in ``X``), titled with its task, given and predicted label.

    Returns
    -------
    matplotlib.figure.Figure
    """
    X = input_table(X, model.image_col)
    images, _ = resolve_images(
        X, model.image_col, model.image_root, check_files=False,
        storage_options=model.storage_options,
    )
    pictures = [decode_image(images[position], model.image_size_) for position in issues["row"]]
    titles = [
        f"{row.task}: given {format_value(model.tasks_[row.task], row.given)}\n"
        f"predicted {format_value(model.tasks_[row.task], row.predicted)}"
        for row in issues.itertuples()
    ]
    return image_grid(pictures, titles, ncols, "Labels to check (given, predicted)")
