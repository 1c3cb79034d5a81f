"""Generate the figures of the docs (gallery, interpretation) into docs/images/.

``make docs`` runs it before building the site; by hand, from the repository root:
``.venv/bin/python docs/make_figures.py`` (about a minute on 2 CPU cores). It fits the
small CNN on 600 synthetic 32 px images for 8 epochs, prints the tables shown in
docs/interpretation.md, and writes history.png, top_losses.png, confusion_color.png,
confusion_shape.png, show_batch.png, lr_find.png (once the estimator has a learning-rate
finder) and the HTML report, report.html. Every figure comes from this real run, and
the same seed gives the same files.
"""

import os
import pathlib
import tempfile

from sk_multitask import MultiTaskImageEstimator, plotting
from sk_multitask.datasets import make_multitask_images
from sk_multitask.report import write_report

IMAGES = pathlib.Path(__file__).resolve().parent / "images"
DPI = 100


def lr_find_figure(est, X, y):
    """The learning-rate finder's figure, or None where the package has none yet."""
    if not hasattr(plotting, "plot_lr_find") or not hasattr(est, "lr_find"):
        print("skipped lr_find.png: this version has no plotting.plot_lr_find")
        return None
    return plotting.plot_lr_find(est.lr_find(X, y))


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
            "lr_find": lr_find_figure(est, df[~df["is_valid"]], y[~df["is_valid"]]),
        }
        for name, fig in figures.items():
            if fig is not None:
                fig.savefig(IMAGES / f"{name}.png", dpi=DPI)
                print(f"wrote {IMAGES / name}.png")
        print(f"wrote {write_report(est, valid, y_valid, IMAGES / 'report.html')}")


if __name__ == "__main__":
    main()
