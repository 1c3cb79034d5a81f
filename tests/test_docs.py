"""The documentation runs: every ```python block of every page, and an API page per name.

Each docs/*.md page (and README.md) runs its ```python blocks in order, in one fresh
namespace per page, in a temporary working folder. A block directly preceded by the line
``<!-- no-run -->`` (it needs UTKFace, a GPU, a download...) is only compiled.
"""

import importlib.util
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]
NO_RUN = "<!-- no-run -->"
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")


def code_blocks(text):
    """``(line, source, runs)`` for each ```python block of a Markdown text.

    ``line`` is the 1-based line of the block's first code line; ``runs`` is False
    for a block whose opening fence is directly preceded by ``<!-- no-run -->``.
    A marker that is not directly followed by a python block is an error, so that a
    misplaced one cannot silently leave a block running or a block unmarked.
    """
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if lines[i].strip() == NO_RUN:
            following = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
            if following is None or following["lang"] != "python":
                raise ValueError(f"line {i + 1}: {NO_RUN} must directly precede a ```python fence")
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
        if match["lang"] == "python":
            body = [line.removeprefix(indent) for line in lines[start:i]]
            runs = start < 2 or lines[start - 2].strip() != NO_RUN
            blocks.append((start + 1, "\n".join(body) + "\n", runs))
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
            "- a list item:",
            "",
            "    ```python",
            "    b = a + 1",
            "    ```",
        ]
    )
    assert code_blocks(text) == [
        (3, "a = 1\n", True),
        (7, "load_utkface('data/UTKFace')\n", False),
        (15, "b = a + 1\n", True),
    ]


def test_code_blocks_rejects_a_stray_marker():
    with pytest.raises(ValueError, match=r"line 1: <!-- no-run --> must directly precede"):
        code_blocks("<!-- no-run -->\n\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="line 1: code fence never closed"):
        code_blocks("```python\nx = 1\n")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_page_code_runs(page, tmp_path, monkeypatch):
    """The page's python blocks run in order, as a reader would paste them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__docs__"}
    for line, source, runs in code_blocks(page.read_text(encoding="utf-8")):
        # Pad with blank lines so that a traceback shows the page's own line.
        code = compile("\n" * (line - 1) + source, str(page), "exec")
        if runs:
            exec(code, namespace)


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
    ``PUBLIC_MODULES`` too.
    """
    listed = [name for names in REFERENCE.GROUPS.values() for name in names]
    public = REFERENCE.public_names()
    assert len(listed) == len(set(listed)), "a name is listed twice in GROUPS"
    missing = sorted(set(public) - set(listed))
    assert not missing, (
        f"public names without a page (add them to GROUPS in docs/reference.py): {missing}"
    )
    assert sorted(set(listed) - set(public)) == [], "GROUPS lists names that are not public"
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
