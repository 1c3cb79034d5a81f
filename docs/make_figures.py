"""Generate the figures of the docs (gallery, interpretation, training) into docs/images/.

``make docs`` runs it before building the site; by hand, from the repository root:
``.venv/bin/python docs/make_figures.py`` (a few minutes on 2 CPU cores). It fits the
small CNN on 600 synthetic 32 px images for 8 epochs, prints the tables shown in
docs/interpretation.md, and writes history.png, top_losses.png, confusion_color.png,
confusion_shape.png, show_batch.png and the HTML report, report.html; then
lr_find.png, and lr_schedule.png of a fine-tuning fit from a backbone trained on half of
the set. Every figure comes from these real runs, and the same seed gives the same files.
"""

import os
import pathlib
import tempfile

import torch

from sk_multitask import MultiTaskImageEstimator, plotting
from sk_multitask.datasets import make_multitask_images
from sk_multitask.report import write_report

IMAGES = pathlib.Path(__file__).resolve().parent / "images"
DPI = 100


def training_figures(df, y, folder):
    """lr_find on the set; the schedule of a fine-tuning fit from weights trained on half."""
    params = dict(
        backbone="simple_cnn", image_size=32, batch_size=32, valid_split="is_valid",
        random_state=0, image_root=df.attrs["image_root"],
    )
    finder = MultiTaskImageEstimator(**params).lr_find(df, y)
    print(f"lr_find suggests {finder.suggested_lr:.2g}")
    half = df.index < len(df) // 2
    pretrained = MultiTaskImageEstimator(**params, max_epochs=4).fit(df[half], y[half])
    weights = os.path.join(folder, "backbone.pt")
    torch.save(pretrained.net_.module_.backbone.state_dict(), weights)
    tuned = MultiTaskImageEstimator(**params, weights=weights, max_epochs=5)
    tuned.fit(df[~half], y[~half])
    return {
        "lr_find": plotting.plot_lr_find(finder),
        "lr_schedule": plotting.plot_lr_schedule(tuned),
    }


def main():
    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        # A relative image folder: the report shows the model's parameters, and a
        # temporary path there would change the file at every run.
        os.chdir(folder)
        df = make_multitask_images(600, image_size=32, path="synthetic", random_state=0)
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
            "top_losses": plotting.plot_top_losses(est, valid, y_valid, k=9),
            "history": plotting.plot_history(est),
            "confusion_color": plotting.plot_confusion_matrix(est, valid, y_valid, "color"),
            "confusion_shape": plotting.plot_confusion_matrix(est, valid, y_valid, "shape"),
            "show_batch": plotting.show_batch(est, df, y, n=9, random_state=0),
            **training_figures(df, y, folder),
        }
        for name, fig in figures.items():
            fig.savefig(IMAGES / f"{name}.png", dpi=DPI)
            print(f"wrote {IMAGES / name}.png")
        print(f"wrote {write_report(est, valid, y_valid, IMAGES / 'report.html')}")


if __name__ == "__main__":
    main()
