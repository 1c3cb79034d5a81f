"""The documentation runs: every ```python block of every page, and an API page per name.

Each docs/*.md page (and README.md) runs its ```python blocks in order, in one fresh
namespace per page, in a temporary working folder. A block directly preceded by the line
``<!-- no-run -->`` (it needs UTKFace, a GPU, a download...) is only compiled. A ```bash
block directly preceded by ``<!-- run -->`` runs too, in that folder, with the
environment's ``sk-multitask`` on the PATH (the blocks in a row in one shell).
"""

import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]
NO_RUN = "<!-- no-run -->"
RUN = "<!-- run -->"
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")


def code_blocks(text):
    """``(line, source, language, runs)`` for each ```python and ```bash block of a text.

    ``line`` is the 1-based line of the block's first code line; ``runs`` is False
    for a python block whose opening fence is directly preceded by ``<!-- no-run -->``,
    True for a bash block only when preceded by ``<!-- run -->``. A marker that is not
    directly followed by a block of its language is an error, so that a misplaced one
    cannot silently leave a block running or a block unmarked.
    """
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        for marker, language in ((NO_RUN, "python"), (RUN, "bash")):
            if lines[i].strip() != marker:
                continue
            following = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
            if following is None or following["lang"] != language:
                raise ValueError(
                    f"line {i + 1}: {marker} must directly precede a ```{language} fence"
                )
        if match is None:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        start, i = i + 1, i + 1
        while i < len(lines) and not (
            lines[i].strip().startswith(fence) and lines[i].strip().strip(fence[0]) == ""
        ):
            i += 1
        if i == len(lines):
            raise ValueError(f"line {start}: code fence never closed")
        if match["lang"] in ("python", "bash"):
            body = [line.removeprefix(indent) for line in lines[start:i]]
            marker = lines[start - 2].strip() if start >= 2 else ""
            runs = marker != NO_RUN if match["lang"] == "python" else marker == RUN
            blocks.append((start + 1, "\n".join(body) + "\n", match["lang"], runs))
        i += 1
    return blocks


def test_code_blocks_parses_fences_and_markers():
    text = "\n".join(
        [
            "intro",
            "```python",
            "a = 1",
            "```",
            "<!-- no-run -->",
            "```python",
            "load_utkface('data/UTKFace')",
            "```",
            "```bash",
            "make docs",
            "```",
            "<!-- run -->",
            "```bash",
            "sk-multitask --version",
            "```",
            "- a list item:",
            "",
            "    ```python",
            "    b = a + 1",
            "    ```",
        ]
    )
    assert code_blocks(text) == [
        (3, "a = 1\n", "python", True),
        (7, "load_utkface('data/UTKFace')\n", "python", False),
        (10, "make docs\n", "bash", False),
        (14, "sk-multitask --version\n", "bash", True),
        (19, "b = a + 1\n", "python", True),
    ]


def test_code_blocks_rejects_a_stray_marker():
    with pytest.raises(ValueError, match=r"line 1: <!-- no-run --> must directly precede"):
        code_blocks("<!-- no-run -->\n\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match=r"line 1: <!-- run --> must directly precede a ```bash"):
        code_blocks("<!-- run -->\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="line 1: code fence never closed"):
        code_blocks("```python\nx = 1\n")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
@pytest.mark.slow
def test_page_code_runs(page, tmp_path, monkeypatch):
    """The page's python blocks run in order, as a reader would paste them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    namespace, shell = {"__name__": "__docs__"}, []
    for line, source, language, runs in code_blocks(page.read_text(encoding="utf-8")):
        if language == "bash":
            shell += [source] if runs else []
            continue
        run_shell(shell)
        # Pad with blank lines so that a traceback shows the page's own line.
        code = compile("\n" * (line - 1) + source, str(page), "exec")
        if runs:
            exec(code, namespace)
    run_shell(shell)


def run_shell(blocks):
    """Run the bash blocks met since the last python block in one shell, then forget them."""
    if blocks:
        script = "set -e\n" + "".join(blocks)
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
        blocks.clear()


def _reference():
    """docs/reference.py: the public names and the groups of the API reference."""
    spec = importlib.util.spec_from_file_location("reference", DOCS / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFERENCE = _reference()
#: The section header that ends the Parameters of a numpydoc docstring.
SECTION = re.compile(r"^\S.*\n-{3,}$", re.MULTILINE)


def documented_parameters(obj):
    """The names of the Parameters section of ``obj``'s numpydoc docstring, in order."""
    doc = inspect.getdoc(obj) or ""
    match = re.search(r"^Parameters\n-{3,}\n", doc, re.MULTILINE)
    if match is None:
        return []
    body = doc[match.end() :]
    end = SECTION.search(body)
    names = []
    for line in body[: end.start() if end else None].splitlines():
        if line and not line[0].isspace():
            names += [name.strip() for name in line.split(" : ")[0].split(",")]
    return names


def test_every_public_name_has_a_page():
    """Each name of a public module's ``__all__`` is in one group of docs/reference.py.

    The hook there gives each its page (``::: path``), so a new public name needs one
    line in ``GROUPS``, a new public module (``sk_multitask.mlflow``) its line in
    ``PUBLIC_MODULES`` too. A second import path of an object already on a page is in
    ``ALIASES`` instead, and that page names it.
    """
    grouped = [name for names in REFERENCE.GROUPS.values() for name in names]
    listed = grouped + list(REFERENCE.ALIASES)
    public = REFERENCE.public_names()
    assert len(listed) == len(set(listed)), "a name is listed twice in GROUPS and ALIASES"
    for alias, name in REFERENCE.ALIASES.items():
        assert name in grouped and REFERENCE.resolve(alias) is REFERENCE.resolve(name)
        assert f"`{REFERENCE.import_line(alias)}`" in REFERENCE.page_markdown(name)
    missing = sorted(set(public) - set(listed))
    assert not missing, (
        f"public names without a page (add them to GROUPS in docs/reference.py): {missing}"
    )
    assert sorted(set(listed) - set(public)) == [], "GROUPS lists names that are not public"
    assert "sk_multitask.exceptions.BadImageWarning" in public
    assert "sk_multitask.MultiTaskImageEstimator" in public  # the lazy exports are read


@pytest.mark.parametrize("name", sorted(REFERENCE.documented_paths()))
def test_reference_page_documents_every_parameter(name):
    """A public class or function has a docstring whose Parameters are its signature's.

    The build checks the rendered page the same way (docs/reference.py, on_page_content):
    every parameter in the page's Parameters table, every own method with its entry.
    """
    obj = REFERENCE.resolve(name)
    if not (inspect.isclass(obj) or inspect.isroutine(obj)):
        return
    assert inspect.getdoc(obj), f"{name} is public but has no docstring"
    parameters, methods = REFERENCE.rendered_entries(obj)
    assert documented_parameters(obj) == parameters, name
    for method in methods:
        assert inspect.getdoc(getattr(obj, method)), f"{name}.{method} has no docstring"


def test_estimator_page_lists_its_parameters_and_methods():
    from sk_multitask import MultiTaskImageEstimator

    parameters, methods = REFERENCE.rendered_entries(MultiTaskImageEstimator)
    assert sorted(parameters) == MultiTaskImageEstimator._get_param_names()
    assert {"fit", "predict", "predict_proba", "evaluate", "save", "load"} <= set(methods)
    page = REFERENCE.page_markdown("sk_multitask.MultiTaskImageEstimator")
    assert "::: sk_multitask.estimator.MultiTaskImageEstimator\n" in page
    for inherited in ("get_params", "set_params", "fit_transform", "get_feature_names_out"):
        assert f"| `{inherited}` |" in page


@pytest.fixture(scope="module")
def reference_site(tmp_path_factory):
    """The API reference built alone, as ``make docs`` builds it (same plugins, options,
    griffe extension and hook), into a temporary folder: ``{public name: page HTML}``.

    The other pages need the figures of docs/make_figures.py (minutes); the reference's
    pages do not (seconds), and link to stand-ins of them here.
    """
    pytest.importorskip("mkdocstrings_handlers.python", reason="needs the docs extra")
    import yaml
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    folder = tmp_path_factory.mktemp("reference")
    (folder / "docs" / "api").mkdir(parents=True)
    (folder / "docs" / "api" / "index.md").write_text((DOCS / "api" / "index.md").read_text())
    for page in DOCS.glob("*.md"):  # what the reference links to: a title will do
        (folder / "docs" / page.name).write_text(f"# {page.stem}\n")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    plugin = next(p["mkdocstrings"] for p in config["plugins"] if isinstance(p, dict))
    python = plugin["handlers"]["python"]
    python["paths"] = [str(ROOT)]
    python["options"]["extensions"] = [str(DOCS / "griffe_docstrings.py")]
    config.update(
        docs_dir=str(folder / "docs"),
        site_dir=str(folder / "site"),
        hooks=[str(DOCS / "reference.py")],
        nav=[{REFERENCE.NAV_TITLE: "api/index.md"}],
        strict=False,
    )
    (folder / "mkdocs.yml").write_text(yaml.safe_dump(config))
    build(load_config(str(folder / "mkdocs.yml")))
    return {
        name: (folder / "site" / "api" / name / "index.html").read_text(encoding="utf-8")
        for name in REFERENCE.documented_paths()
        if name not in REFERENCE.ALIASES  # documented on the page of the name it aliases
    }


def test_reference_pages_render(reference_site):
    """No cross-reference shown as Markdown text, no page named instead of linked, and
    each parameter's own default, on every page of the reference as built.

    The build fails on the same (docs/reference.py, on_page_content).
    """
    problems = [
        f"{name}: {problem}"
        for name, html in reference_site.items()
        for problem in REFERENCE.rendering_problems(
            html, REFERENCE.resolve(name), REFERENCE.defined_at(name)
        )
    ]
    assert not problems, "\n".join(problems)
    # The cases: a default each, and "See docs/backbones.md" a link.
    path = REFERENCE.defined_at("sk_multitask.MultiTaskImageEstimator")
    page = reference_site["sk_multitask.MultiTaskImageEstimator"]
    lr_find = dict(dict(REFERENCE.parameter_tables(page, path))[f"{path}.lr_find"])
    assert (lr_find["start_lr"], lr_find["end_lr"]) == ("1e-7", "10.0")
    assert 'See <a href="../../backbones/">Backbones</a>' in page


def test_documented_parameters_reads_numpydoc():
    def f(a, b, *args, **kwargs):
        """Do.

        Parameters
        ----------
        a, b : int
            Numbers.
        *args
        **kwargs : dict

        Returns
        -------
        int
        """

    assert documented_parameters(f) == ["a", "b", "*args", "**kwargs"]
    assert REFERENCE.rendered_entries(f) == (["a", "b", "*args", "**kwargs"], [])


def test_nav_lists_every_page():
    """Every page of docs/ is reachable from mkdocs.yml's nav, and every nav entry exists."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = config[config.index("\nnav:") :]
    listed = set(re.findall(r"([\w/.-]+\.md)\s*$", nav, re.MULTILINE))
    pages = {page.relative_to(DOCS).as_posix() for page in DOCS.rglob("*.md")}
    assert listed - pages == set(), "nav lists missing pages"
    assert pages - listed == set(), "pages missing from mkdocs.yml's nav"


#: A section of a page that other pages include (``--8<-- "install.md:setup"``) and the
#: README copies, since GitHub cannot include.
SECTION_MARKS = re.compile(
    r"<!-- --8<-- \[start:(\w+)\] -->\n(.*?)<!-- --8<-- \[end:\1\] -->", re.S
)


def shared_sections():
    return dict(SECTION_MARKS.findall((DOCS / "install.md").read_text(encoding="utf-8")))


def test_readme_copies_the_shared_sections():
    """The set-up commands and the extras table: one text in install.md, the README's copy."""
    sections = shared_sections()
    assert set(sections) == {"setup", "extras"}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, text in sections.items():
        assert text in readme, f"README.md's copy of install.md's {name!r} section differs"
    assert '--8<-- "install.md:setup"' in (DOCS / "index.md").read_text(encoding="utf-8")


def requirement_name(requirement):
    """``"dask[distributed]>=2024.1"`` -> ``dask[distributed]``; ``sk-multitask[x]`` -> x."""
    name = re.match(r"[\w.\-]+(\[[\w,]+\])?", requirement).group(0)
    own = re.fullmatch(r"sk-multitask\[(\w+)\]", name)
    if own:
        return f"`{own.group(1)}`"
    return re.sub(r"\[python\]$", "", name)  # mkdocstrings[python]: the handler


def test_extras_table_follows_pyproject():
    """One row per extra of pyproject.toml, naming every package the extra adds."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = {"(none)": project["dependencies"], **project["optional-dependencies"]}
    rows = {}
    for line in shared_sections()["extras"].splitlines()[2:]:
        extra, adds, _ = (cell.strip() for cell in line.strip("|").split("|"))
        rows[extra.strip("`")] = adds.lower()
    assert list(rows) == list(wanted), "the extras table's rows are not pyproject.toml's extras"
    for extra, requirements in wanted.items():
        for requirement in requirements:
            name = requirement_name(requirement).lower()
            assert name in rows[extra], f"the {extra} row does not name {name}"


def test_requirement_name():
    assert requirement_name("dask[distributed]>=2024.1") == "dask[distributed]"
    assert requirement_name("sk-multitask[onnx]") == "`onnx`"
    assert requirement_name("mkdocstrings[python]>=0.29") == "mkdocstrings"
    assert requirement_name("scikit-learn>=1.6") == "scikit-learn"


def test_quickstart_shows_the_table_of_its_own_call():
    """The quickstart's ``df.head()`` table is made by make_figures.py from the same call."""
    spec = importlib.util.spec_from_file_location("make_figures", DOCS / "make_figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    n, size, seed = (figures.QUICKSTART_SET[k] for k in ("n_samples", "image_size", "random_state"))
    call = f"make_multitask_images({n}, image_size={size}, random_state={seed})"
    page = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    assert call in page and '--8<-- "quickstart_head.txt"' in page


# Pages whose tables give a benchmark's measured figures, and the results files the
# benchmark wrote (benchmarks/, each with the command that made it): a figure typed into a
# table that the run did not print fails here.
MEASURED_TABLES = {
    "how_sure.md": ("results_calibration_*.txt", "results_thresholds_*.txt"),
    "labels.md": ("results_labels_*.txt",),
    "tabular.md": ("results_tabular_*.txt",),
    "interpretation.md": ("results_explain_*.txt",),
    "deployment.md": ("results_int8_*.txt",),
}
NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


@pytest.mark.parametrize("page, results", sorted(MEASURED_TABLES.items()))
def test_measured_tables_are_the_benchmarks_output(page, results):
    paths = [path for pattern in results for path in (ROOT / "benchmarks").glob(pattern)]
    printed = "\n".join(path.read_text() for path in paths)
    assert printed, f"no benchmarks/{results}"
    rows = [line for line in (DOCS / page).read_text().splitlines() if line.startswith("|")]
    figures = [number for row in rows for number in NUMBER.findall(row)]
    assert figures, f"{page} has no table of figures"
    assert [n for n in figures if n not in set(NUMBER.findall(printed))] == []


SNIPPET = re.compile(r'^--8<-- "[^"]+"$')


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_snippet_includes_stand_alone(page):
    """pymdownx.snippets includes a file only from a line of its own; anywhere else the
    marker is printed as text."""
    lines = [line for line in page.read_text().splitlines() if "--8<--" in line]
    stray = [line for line in lines if not (SNIPPET.match(line) or line.startswith("<!-- --8<--"))]
    assert [line for line in stray if "`--8<--" not in line] == []
