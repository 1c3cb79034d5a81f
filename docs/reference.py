"""The API reference: one page per public name, grouped by what users do with it.

The public names are those of the ``__all__`` of :data:`PUBLIC_MODULES` (the package and
the submodules users import). Every one of them is listed once in :data:`GROUPS` (or, for
a second import path of the same object, in :data:`ALIASES`), and this
MkDocs hook (``hooks:`` in mkdocs.yml) writes its page into the build, ``api/<name>.md``
with a mkdocstrings directive on the object where it is defined (the package's lazy exports
are invisible to the static documentation generator), and fills the reference's section of
the navigation and the tables of ``api/index.md``. Nothing here is a tracked page, so a new
public name needs one line in :data:`GROUPS`: ``tests/test_docs.py`` fails, naming it,
until it has one. A new public module (``sk_multitask.mlflow``) goes in
:data:`PUBLIC_MODULES`, its names in a group.

Internal modules (targets, loss, callbacks...) are not in the reference: docs/architecture.md
describes them for contributors.

This file imports MkDocs only in the hook functions, so that the tests can read its tables
without the ``docs`` extra.
"""

import ast
import html as html_text
import importlib
import inspect
import logging
import re

#: The modules whose ``__all__`` is the public API; a module not installed yet is skipped.
PUBLIC_MODULES = [
    "sk_multitask",
    "sk_multitask.datasets",
    "sk_multitask.plotting",
    "sk_multitask.report",
    "sk_multitask.onnx",
    "sk_multitask.labels",
    "sk_multitask.mlflow",
    "sk_multitask.exceptions",
]

#: Section of the reference -> the public names on its pages, in the order shown.
GROUPS = {
    "Fit and predict": [
        "sk_multitask.MultiTaskImageEstimator",
    ],
    "Evaluate and explain": [
        "sk_multitask.multitask_scorer",
        "sk_multitask.report.write_report",
        "sk_multitask.plotting.plot_history",
        "sk_multitask.plotting.plot_top_losses",
        "sk_multitask.plotting.plot_explain",
        "sk_multitask.plotting.plot_confusion_matrix",
        "sk_multitask.plotting.plot_regression",
        "sk_multitask.plotting.plot_reliability",
        "sk_multitask.plotting.plot_intervals",
        "sk_multitask.plotting.show_batch",
        "sk_multitask.plotting.plot_lr_find",
        "sk_multitask.plotting.plot_lr_schedule",
        "sk_multitask.plotting.top_losses_figure",
        "sk_multitask.plotting.explain_figure",
        "sk_multitask.plotting.confusion_figure",
        "sk_multitask.plotting.regression_figure",
        "sk_multitask.plotting.reliability_figure",
        "sk_multitask.plotting.interval_figure",
        "sk_multitask.report.figure_to_png_bytes",
    ],
    "Know your labels": [
        "sk_multitask.labels.find_label_issues",
        "sk_multitask.labels.suggest_labels",
    ],
    "Save and deploy": [
        "sk_multitask.load",
        "sk_multitask.onnx.export_onnx",
        "sk_multitask.onnx.OnnxPredictor",
    ],
    "Track and serve with MLflow": [
        "sk_multitask.mlflow.log_model",
        "sk_multitask.mlflow.save_model",
        "sk_multitask.mlflow.load_model",
        "sk_multitask.mlflow.MultiTaskPyfuncModel",
        "sk_multitask.mlflow.FLAVOR_NAME",
        "sk_multitask.mlflow.METHODS",
        "sk_multitask.mlflow.BASE64_COLUMN",
    ],
    "Warnings and errors": [
        "sk_multitask.exceptions.BadImageError",
        "sk_multitask.exceptions.ImageNotFoundError",
        "sk_multitask.exceptions.BadImageWarning",
        "sk_multitask.exceptions.StorageError",
        "sk_multitask.exceptions.CacheDamageWarning",
        "sk_multitask.exceptions.IgnoredWeightsWarning",
        "sk_multitask.exceptions.CalibrationWarning",
        "sk_multitask.exceptions.QuantizationWarning",
        "sk_multitask.exceptions.MissingLikeLabelWarning",
        "sk_multitask.exceptions.LabelsWarning",
        "sk_multitask.exceptions.TableColumnWarning",
        "sk_multitask.exceptions.InconsistentVersionWarning",
    ],
    "Datasets": [
        "sk_multitask.datasets.make_multitask_images",
        "sk_multitask.datasets.load_utkface",
    ],
    "The package": [
        "sk_multitask.__version__",
    ],
}

#: A public name that is another's object -> the name whose page documents it (and says
#: that it is importable from here too): one page per object.
ALIASES = {
    "sk_multitask.InconsistentVersionWarning": "sk_multitask.exceptions.InconsistentVersionWarning",
}

#: The line of api/index.md that the hook replaces with the tables of :data:`GROUPS`.
TABLES_MARKER = "<!-- the reference tables -->"
#: The entry of mkdocs.yml's nav that the hook fills with the reference's pages.
NAV_TITLE = "API reference"

log = logging.getLogger("mkdocs.plugins.reference")
#: A cross-reference left as Markdown text. mkdocstrings prints a docstring's type (the
#: Type column) as a Python expression, never as Markdown: a reference there stays raw.
RAW_REFERENCE = re.compile(r"\[[^\[\]<>]*\]\[[A-Za-z_][\w.]*\]")
#: A page of the site named as a file instead of linked (docs/griffe_docstrings.py links
#: ``docs/<page>.md``).
PAGE_AS_CODE = re.compile(r"<code>docs/[\w/.-]+\.md</code>")


def public_names():
    """Every public name, ``module.name``, of the modules of :data:`PUBLIC_MODULES`."""
    names = []
    for module_name in PUBLIC_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        names += [f"{module_name}.{name}" for name in module.__all__]
    return names


def resolve(public_name):
    """The object a public name stands for."""
    module, _, name = public_name.rpartition(".")
    return getattr(importlib.import_module(module), name)


def defined_at(public_name):
    """The dotted path where the object is defined (a constant: its public name)."""
    obj = resolve(public_name)
    if inspect.isclass(obj) or inspect.isroutine(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    return public_name


def page_uri(public_name):
    return f"api/{public_name}.md"


def short_name(public_name):
    return public_name.rpartition(".")[2]


def import_line(public_name):
    module, _, name = public_name.rpartition(".")
    return f"from {module} import {name}"


def summary(public_name):
    """The first paragraph of the public name's documentation, as one Markdown line."""
    obj = resolve(public_name)
    if inspect.isclass(obj) or inspect.isroutine(obj):
        return summary_of(obj)
    return constant_comment(public_name)


def constant_comment(public_name):
    """The ``#:`` comment above a module constant (how the package documents them)."""
    module, _, name = public_name.rpartition(".")
    lines = inspect.getsource(importlib.import_module(module)).splitlines()
    at = next(i for i, line in enumerate(lines) if re.match(rf"{re.escape(name)}\s*[:=]", line))
    comment = []
    while at > 0 and lines[at - 1].lstrip().startswith("#:"):
        at -= 1
        comment.insert(0, lines[at].lstrip()[2:].strip())
    return " ".join(comment)


def summary_of(obj):
    first = (inspect.getdoc(obj) or "").split("\n\n")[0].replace("\n", " ")
    # Sphinx roles and scikit-learn's glossary terms read as code in a table.
    return re.sub(r":\w+:`~?([^`<]*?)\s*(?:<[^>]*>)?`", r"`\1`", first)


def page_markdown(public_name):
    kind = "class" if inspect.isclass(resolve(public_name)) else "function"
    if not callable(resolve(public_name)):
        kind = "constant"
    also = [f"`{import_line(alias)}`" for alias, name in ALIASES.items() if name == public_name]
    markdown = (
        f"# {short_name(public_name)}\n\n"
        f"`{import_line(public_name)}` ({kind}{'; also ' if also else ''}{', '.join(also)})\n\n"
        f"::: {defined_at(public_name)}\n"
    )
    if kind == "class":
        # The prediction methods are the shared protocol's (a mixin of this package).
        markdown += (
            "    options:\n      inherited_members: true\n"
            "      summary:\n        functions: true\n"
        )
        markdown += inherited_methods(resolve(public_name))
    return markdown


def inherited_methods(cls):
    """A table of the public methods ``cls`` inherits from scikit-learn.

    The static documentation generator would have to parse all of scikit-learn to render
    them; their docstrings are read here, where they are imported already.
    """
    rows = [
        f"| `{name}` | {summary_of(getattr(cls, name))} |"
        for name in sorted(dir(cls))
        if not name.startswith("_")
        and callable(getattr(cls, name))
        and name not in vars(cls)
        and getattr(getattr(cls, name), "__module__", "").startswith("sklearn.")
    ]
    if not rows:
        return ""
    return (
        "\n## Inherited from scikit-learn\n\n"
        "| method | what it does |\n|---|---|\n" + "\n".join(rows) + "\n"
    )


def documented_paths():
    """Public name -> the path of the object its page renders (an alias: its name's page)."""
    paths = {name: defined_at(name) for names in GROUPS.values() for name in names}
    return paths | {alias: paths[name] for alias, name in ALIASES.items()}


# -- the MkDocs hook -------------------------------------------------------------------


def on_config(config):
    for i, entry in enumerate(config["nav"]):
        if isinstance(entry, dict) and NAV_TITLE in entry:
            index = entry[NAV_TITLE]
            config["nav"][i] = {
                NAV_TITLE: [
                    index,
                    *[
                        {group: [{short_name(n): page_uri(n)} for n in names]}
                        for group, names in GROUPS.items()
                    ],
                ]
            }
            return config
    raise ValueError(f"mkdocs.yml's nav has no {NAV_TITLE!r} entry for the reference")


def on_files(files, config):
    from mkdocs.structure.files import File

    missing = sorted(set(public_names()) - set(documented_paths()))
    if missing:
        log.warning(
            f"public names without a page (add them to GROUPS in docs/reference.py): {missing}"
        )
    for names in GROUPS.values():
        for name in names:
            files.append(File.generated(config, page_uri(name), content=page_markdown(name)))
    return files


def on_page_markdown(markdown, page, config, files):
    if TABLES_MARKER not in markdown:
        return markdown
    tables = []
    for group, names in GROUPS.items():
        rows = [
            f"| [`{short_name(n)}`]({n}.md) | `{import_line(n)}` | {summary(n)} |" for n in names
        ]
        tables.append(
            f"## {group}\n\n| name | import | what it does |\n|---|---|---|\n" + "\n".join(rows)
        )
    return markdown.replace(TABLES_MARKER, "\n\n".join(tables))


def on_page_content(html, page, config, files):
    """Fail the build when a class or function page lacks a parameter or a method."""
    uri = page.file.src_uri
    by_uri = {page_uri(n): n for names in GROUPS.values() for n in names}
    if uri not in by_uri:
        return html
    name = by_uri[uri]
    obj, path = resolve(name), defined_at(name)
    parameters, methods = rendered_entries(obj)
    # The object's own parameters table is the page's first one.
    start = html.find('doc-section-title">Parameters:')
    table = html[start : html.find("</table>", start)] if start >= 0 else ""
    for parameter in parameters:
        if f"<code>{parameter}</code>" not in table:
            log.warning(f"{uri}: parameter {parameter!r} of {name} is not in its Parameters")
    for method in methods:
        if f'id="{path}.{method}"' not in html:
            log.warning(f"{uri}: method {method!r} of {name} has no entry on its page")
    for problem in rendering_problems(html, obj, path):
        log.warning(f"{uri}: {problem}")
    return html


def rendering_problems(html, obj, path):
    """What the page of ``obj`` (rendered from ``path``) shows wrongly, one line each.

    A cross-reference left as text, a page of the site named instead of linked, and a
    default of a Parameters table that is not the signature's (one numpydoc line for two
    parameters gives both the same default).
    """
    # Code examples may index twice (``df["a"][0]``): only the prose is searched.
    prose = re.sub(r"<pre\b.*?</pre>", "", html, flags=re.S)
    problems = [f"cross-reference shown as text: {ref}" for ref in RAW_REFERENCE.findall(prose)]
    problems += [f"page named instead of linked: {page}" for page in PAGE_AS_CODE.findall(prose)]
    for owner, rows in parameter_tables(html, path):
        routine = obj if owner == path else getattr(obj, owner.rpartition(".")[2], None)
        if not callable(routine):
            continue
        signature = inspect.signature(routine)
        for name, shown in rows:
            parameter = signature.parameters.get(name)
            if parameter is not None and not _shows_default(shown, parameter.default):
                problems.append(
                    f"{owner}: parameter {name!r} shows the default {shown!r}, "
                    f"its signature's is {parameter.default!r}"
                )
    return problems


def parameter_tables(html, path):
    """``(owner, [(name, default shown), ...])`` for the Parameters table of ``path``
    and of each of its members that has a heading of its own on the page."""
    pieces = re.split(rf'<h\d id="({re.escape(path)}(?:\.\w+)?)"', html)
    for owner, piece in zip([path, *pieces[1::2]], pieces[0::2], strict=True):
        start = piece.find('doc-section-title">Parameters:')
        if start < 0:
            continue
        table = piece[start : piece.find("</table>", start)]
        rows = []
        for row in re.findall(r'<tr class="doc-section-item">(.*?)</tr>', table, re.S):
            cells = [_text(cell) for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
            rows.append((cells[0], cells[-1]))
        yield owner, rows


def _text(cell):
    return html_text.unescape(re.sub(r"<[^>]+>", "", cell)).strip()


def _shows_default(shown, default):
    """Whether a Default cell says ``default``; a default the docstring gives in words
    (not a Python literal) is taken as said."""
    if shown == "required":
        return default is inspect.Parameter.empty
    try:
        return ast.literal_eval(shown) == default
    except (ValueError, SyntaxError):
        return True


def rendered_entries(obj):
    """The parameters and own public methods that the page of ``obj`` must show."""
    if inspect.isclass(obj):
        # A class that keeps a builtin's __init__ (a warning's *args) has no parameters
        # of its own to document.
        own = inspect.isfunction(obj.__init__)
        signature = inspect.signature(obj.__init__ if own else lambda: None)
        # Its own methods and those of the package's classes it inherits from (the
        # prediction protocol's, shown as inherited members).
        own_classes = [c for c in obj.__mro__ if c.__module__.startswith("sk_multitask")]
        methods = [
            attr
            for cls in own_classes
            for attr, value in vars(cls).items()
            if not attr.startswith("_")
            and (
                inspect.isfunction(value)
                or isinstance(value, classmethod | staticmethod | property)
            )
        ]
    elif inspect.isroutine(obj):
        signature, methods = inspect.signature(obj), []
    else:
        return [], []
    parameters = [
        ("**" if p.kind is p.VAR_KEYWORD else "*" if p.kind is p.VAR_POSITIONAL else "") + p.name
        for p in signature.parameters.values()
        if p.name not in ("self", "cls")
    ]
    return parameters, methods
