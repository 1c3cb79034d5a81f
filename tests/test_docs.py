"""The documentation runs: every ```python block of every page, and an API entry per name.

Each docs/*.md page (and README.md) runs its ```python blocks in order, in one fresh
namespace per page, in a temporary working folder. A block directly preceded by the line
``<!-- no-run -->`` (it needs UTKFace, a GPU, a download...) is only compiled.
"""

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import sk_multitask

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]
NO_RUN = "<!-- no-run -->"
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
DIRECTIVE = re.compile(r"^:::\s*(?P<path>[\w.]+)\s*$", re.MULTILINE)
#: Public modules documented elsewhere than the API reference, with where.
NOT_IN_REFERENCE = {
    "sk_multitask.cli": "the command line, in docs/command_line.md",
    "sk_multitask.cli_options": "the command line's options, in docs/command_line.md",
}


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


def public_modules():
    """Every importable module of the package with no ``_private`` part in its name."""
    names = ["sk_multitask"] + [
        info.name
        for info in pkgutil.walk_packages(sk_multitask.__path__, "sk_multitask.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    return [importlib.import_module(name) for name in names]


def test_reference_documents_every_public_name():
    """Each name in ``__all__`` of each public module is rendered by a ``:::`` directive.

    A directive on a module renders its ``__all__`` (``filters: public`` in mkdocs.yml),
    so a new public name needs no docs change, and a new module one page with
    ``::: sk_multitask.new_module`` plus its line in mkdocs.yml's nav.
    """
    documented, documented_objects = set(), set()
    for page in (DOCS / "api").glob("*.md"):
        for path in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            module = importlib.import_module(path)
            assert hasattr(module, "__all__"), f"{page.name}: {path} has no __all__"
            for name in module.__all__:
                documented.add(f"{path}.{name}")
                obj = getattr(module, name)
                if inspect.isclass(obj) or inspect.isroutine(obj):
                    documented_objects.add(obj)
    missing, undocumented = [], []
    for module in public_modules():
        if module.__name__ in NOT_IN_REFERENCE:
            continue
        assert hasattr(module, "__all__"), (
            f"{module.__name__} is public but has no __all__: list its public names"
        )
        for name in module.__all__:
            obj = getattr(module, name)
            if f"{module.__name__}.{name}" not in documented and obj not in documented_objects:
                missing.append(f"{module.__name__}.{name}")
            # The reference shows no undocumented object (mkdocs.yml: show_if_no_docstring);
            # griffe_docstrings.py fails the build for an undocumented constant.
            if (inspect.isclass(obj) or inspect.isroutine(obj)) and not inspect.getdoc(obj):
                undocumented.append(f"{module.__name__}.{name}")
    assert not missing, f"not in docs/api/*.md (add '::: module' to a page): {missing}"
    assert not undocumented, f"public but without a docstring: {undocumented}"


def test_nav_lists_every_page():
    """Every page of docs/ is reachable from mkdocs.yml's nav, and every nav entry exists."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = config[config.index("\nnav:") :]
    listed = set(re.findall(r"([\w/.-]+\.md)\s*$", nav, re.MULTILINE))
    pages = {page.relative_to(DOCS).as_posix() for page in DOCS.rglob("*.md")}
    assert listed - pages == set(), "nav lists missing pages"
    assert pages - listed == set(), "pages missing from mkdocs.yml's nav"
