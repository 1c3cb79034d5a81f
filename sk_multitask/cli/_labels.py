"""The command line's label commands: ``audit`` (which labels look wrong) and ``suggest``
(which missing cells to label next), through :mod:`sk_multitask.labels`."""

from __future__ import annotations

import sys

from ._io import (
    check_output,
    check_writable,
    images_input,
    load_model,
    model_targets,
    refuse_overwriting,
    write_table,
)
from ._options import CommandError


def _check_out(args, inputs):
    """The output table's format and folder, checked before any work."""
    check_output(args.out)
    refuse_overwriting(inputs, [args.out])
    if args.out != "-":
        check_writable(args.out, "the table")


def audit(args):
    """Judge every labelled cell of a table against out-of-fold predictions; write the table
    of :func:`~sk_multitask.labels.find_label_issues`."""
    from ..labels._issues import cleanlab_modules, find_label_issues
    from ._main import data_and_estimator

    _check_out(args, {"data": args.data})
    cleanlab_modules()  # the extra's one-line error before any fit
    data, y, est = data_and_estimator(args)
    issues = find_label_issues(
        est, data, y, cv=args.cv, n_jobs=args.n_jobs, random_state=args.seed
    )
    write_table(issues, args.out)
    flagged = issues.groupby("task")["is_label_issue"].agg(["sum", "size"])
    counts = ", ".join(f"{task} {n} of {size}" for task, (n, size) in flagged.iterrows())
    sink = sys.stderr if args.out == "-" else sys.stdout
    print(f"labels flagged: {counts or 'none judged'}; {issues.attrs['predictions']}", file=sink)
    print(f"{len(issues)} judged cells written to {args.out}", file=sink)
    return 0


def suggest(args):
    """Rank the missing cells of a table (every cell of a task it lacks) by the model's
    uncertainty; write the table of :func:`~sk_multitask.labels.suggest_labels`."""
    from ..labels._suggest import suggest_labels

    _check_out(args, {"data": args.data, "--model": args.model})
    model = load_model(args.model, verbose=1, storage_options=args.storage_options)
    if args.task is not None and args.task not in model.tasks_:
        raise CommandError(f"--task {args.task!r} is not one of the model's {list(model.tasks_)}")
    data, X = images_input(args.data, model, args.images)
    table = suggest_labels(model, X, model_targets(model, data), task=args.task, n=args.n)
    write_table(table, args.out)
    sink = sys.stderr if args.out == "-" else sys.stdout
    print(f"{len(table)} cells to label, most uncertain first: {args.out}", file=sink)
    return 0
