"""The figures, tables and numbers of the docs, from real runs, into the build folder.

``make docs`` runs it before building the site; by hand, from the repository root:
``.venv/bin/python docs/make_figures.py`` (``make docs`` took 26 s on an idle 2-core
machine, 8 to 14 minutes with a dozen other jobs sharing it). It fits the
small CNN on 600 synthetic 32 px images for 8 epochs and writes, into :data:`GENERATED`
(``build/docs``, ignored by git: a build changes no tracked file):

- ``images/``: history.png, top_losses.png, confusion_color.png, confusion_shape.png,
  show_batch.png, explain_shape.png and top_losses_heatmap.png (where each task looked)
  and the HTML report, report.html; then lr_find.png, and lr_schedule.png
  of a fine-tuning fit from a backbone trained on half of the set;
- ``snippets/``: the tables and sentences the pages show about that run (the metrics,
  the top losses, the confusions...), included by ``--8<-- "name"`` lines
  (pymdownx.snippets), so that no page types a number the run did not print.

The data are the same for a seed; the fitted numbers can differ a little between machines
(0.949 and 0.931 for the R² of `area`, in two runs), which is why the pages include them
rather than type them. This file is also a MkDocs hook (``hooks:`` in
mkdocs.yml): it puts ``images/`` into the site and points the snippets at ``snippets/``
(and at docs/, for sections of one page shown on another),
and stops the build, saying what to run, when the run has not been made.
"""

import os
import pathlib
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Where the run writes: a folder of the build, ignored by git.
GENERATED = ROOT / "build" / "docs"
IMAGES = GENERATED / "images"
SNIPPETS = GENERATED / "snippets"
DPI = 100
#: The quickstart's first call, whose table it shows.
QUICKSTART_SET = dict(n_samples=200, image_size=16, random_state=0)


def training_figures(df, y, folder):
    """lr_find on the set; the schedule of a fine-tuning fit from weights trained on half."""
    import torch

    from sk_multitask import MultiTaskImageEstimator, plotting

    params = dict(
        backbone="simple_cnn",
        image_size=32,
        batch_size=32,
        valid_split="is_valid",
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
    return {
        "lr_find": plotting.plot_lr_find(finder),
        "lr_schedule": plotting.plot_lr_schedule(tuned),
    }


def snippets(est, df, valid, y_valid):
    """The pages' tables and sentences about the run, by snippet file name."""
    from sk_multitask.datasets import make_multitask_images

    metrics = est.evaluate(valid, y_valid)
    top = est.top_losses(valid, y_valid, k=9)
    tasks = list(est.tasks_)
    summary = (
        f"In this run ({len(df)} images, {len(est.history_)} epochs, "
        f"{len(valid)} held out), the validation accuracy of `color` is "
        f"{metrics.loc['color', 'accuracy']:.3g}, that of `shape` "
        f"{metrics.loc['shape', 'accuracy']:.3g}, and the R² of `area` "
        f"{metrics.loc['area', 'r2']:.3g}."
    )
    labelled = {task: top[f"{task}_true"].notna() for task in tasks[:2]}
    right = {
        task: f"{int((top[f'{task}_pred'] == top[f'{task}_true']).sum())} of the "
        f"{int(labelled[task].sum())} with a `{task}` label"
        for task in tasks[:2]
    }
    wrong = top[labelled["shape"] & (top["shape_pred"] != top["shape_true"])]
    pairs = (wrong["shape_true"] + " taken for a " + wrong["shape_pred"]).value_counts()
    top_sentence = (
        f"Here, of the nine worst validation images, {right['color']} have it right, and "
        f"{right['shape']}"
        + (
            f"; the most frequent shape error is {pairs.index[0]} ({pairs.iloc[0]})."
            if len(pairs)
            else "."
        )
    )
    shape = y_valid["shape"].notna()
    truth, predicted = y_valid["shape"][shape], est.predict(valid[shape])["shape"]
    recalls = [
        f"{(predicted[truth == label] == label).mean():.0%} of the {(truth == label).sum()} "
        f"{label}s"
        for label in est.tasks_["shape"].classes_
    ]
    confusion = (
        f"In this run the shape task finds {', '.join(recalls[:-1])} and {recalls[-1]} "
        "of the validation rows."
    )
    quickstart = make_multitask_images(**QUICKSTART_SET, path="quickstart")
    return {
        "evaluate.txt": metrics.round(3).to_string(),
        "top_losses.txt": est.top_losses(valid, y_valid, k=3).round(3).to_string(),
        "run_summary.md": summary,
        "top_losses_sentence.md": top_sentence,
        "confusion_shape_sentence.md": confusion,
        "quickstart_head.txt": quickstart.head().to_string(),
        "epoch_table.txt": epoch_table(),
    }


def epoch_table():
    """The epoch table of ``verbose=1`` for the user guide's example fit (plain text)."""
    import contextlib
    import io

    from sk_multitask import MultiTaskImageEstimator
    from sk_multitask.datasets import make_multitask_images

    df = make_multitask_images(64, image_size=16, path="user_guide", random_state=0)
    est = MultiTaskImageEstimator(
        image_root=df.attrs["image_root"], backbone="simple_cnn", weights=None, image_size=16,
        max_epochs=1, valid_split="is_valid", random_state=0, verbose=1,
    )
    printed = io.StringIO()  # the progress bar goes to stderr, the table to stdout
    with contextlib.redirect_stdout(printed):
        est.fit(df, df[["color", "shape", "area"]])
    return printed.getvalue().rstrip()


def main():
    from sk_multitask import MultiTaskImageEstimator, plotting
    from sk_multitask.datasets import make_multitask_images
    from sk_multitask.report import write_report

    IMAGES.mkdir(parents=True, exist_ok=True)
    SNIPPETS.mkdir(parents=True, exist_ok=True)
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
        valid, y_valid = df[df["is_valid"]], y[df["is_valid"]]
        for name, text in snippets(est, df, valid, y_valid).items():
            (SNIPPETS / name).write_text(text + "\n", encoding="utf-8")
            print(f"wrote {SNIPPETS / name}:\n{text}")
        figures = {
            "top_losses": plotting.plot_top_losses(est, valid, y_valid, k=9),
            "history": plotting.plot_history(est),
            "confusion_color": plotting.plot_confusion_matrix(est, valid, y_valid, "color"),
            "confusion_shape": plotting.plot_confusion_matrix(est, valid, y_valid, "shape"),
            "show_batch": plotting.show_batch(est, df, y, n=9, random_state=0),
            "explain_shape": plotting.plot_explain(est, valid, "shape"),
            "top_losses_heatmap": plotting.plot_top_losses(
                est, valid, y_valid, k=4, heatmap=True
            ),
            **training_figures(df, y, folder),
        }
        for name, fig in figures.items():
            fig.savefig(IMAGES / f"{name}.png", dpi=DPI)
            print(f"wrote {IMAGES / name}.png")
        print(f"wrote {write_report(est, valid, y_valid, IMAGES / 'report.html')}")


# -- the MkDocs hook -------------------------------------------------------------------


def on_config(config):
    if not any(IMAGES.glob("*.png")):
        raise SystemExit(
            f"{GENERATED} has no figures: run 'python docs/make_figures.py' first (make docs does)"
        )
    # The run's snippets, and the pages' own sections (install.md's set-up commands).
    snippets = config["mdx_configs"].setdefault("pymdownx.snippets", {})
    snippets["base_path"] = [str(SNIPPETS), config["docs_dir"]]
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    for path in sorted(IMAGES.iterdir()):
        files.append(File.generated(config, f"images/{path.name}", abs_src_path=str(path)))
    return files


if __name__ == "__main__":
    main()
