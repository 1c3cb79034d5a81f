"""Generate the figures of docs/interpretation.md and docs/training.md into docs/images/.

Run from the repository root: ``.venv/bin/python docs/make_figures.py`` (about a
minute on a CPU). It fits the small CNN on the synthetic image set and saves
top_losses.png, history.png, confusion_shape.png and show_batch.png; then
lr_find.png and, for a backbone pretrained on half of the set, lr_schedule.png.
"""

import os
import pathlib
import tempfile

import torch

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.datasets import make_multitask_images
from sk_multitask.plotting import (
    plot_confusion_matrix,
    plot_history,
    plot_lr_find,
    plot_lr_schedule,
    plot_top_losses,
    show_batch,
)

IMAGES = pathlib.Path(__file__).resolve().parent / "images"
DPI = 100


def main():
    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        df = make_multitask_images(600, image_size=32, path=folder, random_state=0)
        y = df[["color", "shape", "area"]]
        est = MultiTaskImageEstimator(
            backbone="simple_cnn",
            weights=None,
            image_size=32,
            max_epochs=8,
            valid_split="is_valid",
            random_state=0,
            image_root=df.attrs["image_root"],
        ).fit(df, y)
        # The tables printed here are those shown in interpretation.md.
        valid, y_valid = df[df["is_valid"]], y[df["is_valid"]]
        print(est.evaluate(valid, y_valid).round(3).to_string())
        print(est.top_losses(valid, y_valid, k=3).round(3).to_string())
        figures = {
            "top_losses": plot_top_losses(est, valid, y_valid, k=9),
            "history": plot_history(est),
            "confusion_shape": plot_confusion_matrix(est, valid, y_valid, "shape"),
            "show_batch": show_batch(est, df, y, n=9, random_state=0),
        }
        figures.update(training_figures(df, y, folder))
        for name, fig in figures.items():
            fig.savefig(IMAGES / f"{name}.png", dpi=DPI)
            print(f"wrote {IMAGES / name}.png")


def training_figures(df, y, folder):
    """lr_find on the set; the schedule of a fine-tuning fit from weights trained on half."""
    params = dict(
        backbone="simple_cnn", image_size=32, batch_size=32, valid_split="is_valid",
        random_state=0,
        image_root=df.attrs["image_root"],
    )
    finder = MultiTaskImageEstimator(**params).lr_find(df, y)
    print(f"lr_find suggests {finder.suggested_lr:.2g}")
    half = df.index < len(df) // 2
    pretrained = MultiTaskImageEstimator(**params, max_epochs=4).fit(df[half], y[half])
    weights = os.path.join(folder, "backbone.pt")
    torch.save(pretrained.net_.module_.backbone.state_dict(), weights)
    tuned = MultiTaskImageEstimator(**params, weights=weights, max_epochs=5)
    tuned.fit(df[~half], y[~half])
    return {"lr_find": plot_lr_find(finder), "lr_schedule": plot_lr_schedule(tuned)}


if __name__ == "__main__":
    main()
