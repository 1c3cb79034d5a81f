"""The layout of the package, and docs/architecture.md checked against it.

The page's module tables, layers and torch-free list are read here and compared with the
files on disk and the import-linter contracts of pyproject.toml, so that the page is never
a hand copy that drifts. The package's shape is bounded too (layers, top-level modules,
lines of code per module), and its packages' re-exports and torch-free imports are run.
"""

import ast
import importlib
import inspect
import io
import re
import tokenize
from pathlib import Path

import pytest
from conftest import run_python_without

# pyproject.toml is read with the standard library's TOML reader, new in Python 3.11.
tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sk_multitask"
PAGE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "importlinter"
]["contracts"]

MAX_LAYERS = 10
MAX_TOP_LEVEL_MODULES = 12
MAX_CODE_LINES = 350
#: Modules over MAX_CODE_LINES today, with their count when they were listed: the list may
#: only shrink (a module split below the bound leaves it) and a count only fall. Empty:
#: no module is over the bound.
KNOWN_LONG = {}
#: Exception classes users never see, so not in sk_multitask.exceptions, and why.
INTERNAL_EXCEPTIONS = {
    "cli._options.CommandError": "the command line prints it as one line and exits 1",
    "training.callbacks._stopping.StopTraining": "a callback's signal to the net, caught there",
}
#: Names a package's ``__all__`` exports though another package defines them, and why:
#: to remove (the test fails when one is gone, so that this list only shrinks).
FOREIGN_EXPORTS = {
    "sk_multitask.network.is_weight": "network._weighting re-exports targets._cell_loss's",
}
#: Imported without torch beside the torch-free contract's modules: the ONNX predictor's
#: public path (``onnx._export`` imports torch inside its functions only), and torch-free
#: modules of packages whose ``__init__`` must then import nothing.
TORCH_FREE_IMPORTS = [
    "sk_multitask.onnx",
    "sk_multitask.exceptions",
    "sk_multitask.inputs._sources",
    "sk_multitask.persistence._document",
    "sk_multitask.predicting._calibration",
    "sk_multitask.evaluation",
]


def contract(kind):
    """The one contract of pyproject.toml that ``kind`` picks."""
    picks = {
        "layers": lambda c: c["type"] == "layers",
        "torch-free": lambda c: (
            c["type"] == "forbidden"
            and "torch" in c["forbidden_modules"]
            and c["source_modules"] != ["sk_multitask.exceptions"]
        ),
    }
    (found,) = [c for c in CONTRACTS if picks[kind](c)]
    return found


def relative(name):
    """``sk_multitask.inputs._sources`` -> ``inputs._sources``, as the page names modules."""
    return name.strip().removeprefix("sk_multitask.")


def section(heading, text=PAGE):
    """The text of the page's ``## heading`` section, up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/architecture.md has no '## {heading}' section"
    return match.group(1)


def table_rows(text):
    """The cells of each row of the Markdown tables in ``text`` (``\\|`` is a cell's "|")."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|[-|: ]+\|", line):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip("|"))])
    return rows


def code_spans(text):
    """The inline code of Markdown ``text``, fenced blocks apart."""
    prose = re.sub(r"^(\s*)(`{3,}|~{3,}).*?^\1\2\s*$", "", text, flags=re.M | re.S)
    return re.findall(r"(?<!`)`([^`\n]+)`(?!`)", prose)


def modules_on_disk():
    """Every module of the package as the page names it: ``inputs._sources``,
    ``cli.__main__``; ``__init__`` for the package's own, ``inputs/`` for a subpackage's."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts == ("__init__",):
            names.add("__init__")
        elif parts[-1] == "__init__":
            names.add("/".join(parts[:-1]) + "/")
        else:
            names.add(".".join(parts))
    return names


def module_path(name):
    """The file of a module named as on the page (``training.callbacks``, ``report``)."""
    path = PACKAGE.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def is_module(dotted):
    """Whether ``sk_multitask.…`` is a module or package of this checkout."""
    return dotted == "sk_multitask" or module_path(relative(dotted)).exists()


def test_layers_are_the_contracts():
    """The page's layer table is the layer contract, layer by layer, top first."""
    rows = [row for row in table_rows(section("Layers")) if row[0].isdigit()]
    page = [sorted(code_spans(row[1])) for row in rows]
    layers = [
        sorted(relative(n) for n in layer.split("|")) for layer in contract("layers")["layers"]
    ]
    assert [int(row[0]) for row in rows] == list(range(1, len(rows) + 1))
    assert page == layers, "docs/architecture.md's layers differ from pyproject.toml's"
    assert len(layers) <= MAX_LAYERS


def test_torch_free_modules_are_the_contracts():
    """The page's torch-free list is the torch-free contract's modules, no more, no less."""
    bullets = re.findall(r"^- `([^`]+)`", section("Torch-free modules"), re.M)
    listed = {relative(n) for n in contract("torch-free")["source_modules"]}
    assert len(bullets) == len(set(bullets)), "a module is listed twice"
    assert sorted(set(bullets) - listed) == [], "listed on the page, not in the contract"
    assert sorted(listed - set(bullets)) == [], "in the contract, not listed on the page"


def test_every_contract_is_named_on_the_page():
    """lint-imports reports a contract by its name: the page says what each one is."""
    for each in CONTRACTS:
        assert f"*{each['name']}*" in section("Layers"), each["name"]


def test_every_module_is_on_the_page():
    """Each module on disk has its row (a subpackage its heading), and each row a module."""
    holds = section("What each part holds")
    rows = {code_spans(row[0])[0] for row in table_rows(holds) if code_spans(row[0])}
    headings = set(re.findall(r"^### `([\w/]+/)`", holds, re.M))
    on_page, on_disk = rows | headings, modules_on_disk()
    assert sorted(on_disk - on_page) == [], "modules missing from docs/architecture.md"
    assert sorted(on_page - on_disk) == [], "docs/architecture.md names modules not on disk"


def top_level_names(path):
    """The names a module defines at its top level (classes, functions, assignments)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.ImportFrom):
            names |= {alias.asname or alias.name for alias in node.names}
    return names


def test_module_paths_on_the_page_exist():
    """A private module's path in the page's text (``inputs._disk_cache.image_fingerprints``)
    names a module on disk, and what follows it a name that module defines."""
    stale = []
    for span in sorted(set(code_spans(PAGE))):
        if "._" not in span or not re.fullmatch(r"[a-z_]+(\.\w+)+", span):
            continue
        parts = span.split(".")
        found = [i for i in range(1, len(parts) + 1) if module_path(".".join(parts[:i])).exists()]
        if not found or (
            found[-1] < len(parts)
            and parts[found[-1]] not in top_level_names(module_path(".".join(parts[: found[-1]])))
        ):
            stale.append(span)
    assert stale == []


#: Code spans of the pages that look like dotted paths and are not: a file's name.
NOT_PATHS = {"sk_multitask.json"}  # the model document's file inside a safe file


@pytest.mark.parametrize(
    "page",
    [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))],
    ids=lambda page: page.name,
)
def test_dotted_paths_in_the_docs_exist(page):
    """Each ``sk_multitask.…`` path of a page's text is importable: no page names a module
    that has moved. The changelog is history: it names modules as they were."""
    if page.name == "changelog.md":
        return
    missing = []
    for span in set(code_spans(page.read_text(encoding="utf-8"))):
        if not re.fullmatch(r"sk_multitask(\.\w+)+", span) or span in NOT_PATHS:
            continue
        # The longest prefix that is a module of this checkout (an installed copy of the
        # package elsewhere may still hold a module that has moved here).
        parts = span.split(".")
        at = max(i for i in range(1, len(parts) + 1) if is_module(".".join(parts[:i])))
        obj = importlib.import_module(".".join(parts[:at]))
        try:
            for part in parts[at:]:
                obj = getattr(obj, part)
        except AttributeError:
            missing.append(span)
    assert sorted(missing) == []


def test_top_level_modules_are_few():
    """A newcomer's ``ls sk_multitask``: the stages, and a few modules beside them."""
    modules = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, sorted(modules)


def test_readme_tree_is_the_package():
    """The README's Layout tree lists each top-level module and subpackage, and no other."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tree = re.search(r"^## Layout\n.*?```\n(.*?)```", readme, re.M | re.S).group(1)
    listed = set(re.findall(r"^  (\w+(?:\.py|/))\s", tree, re.M))
    on_disk = {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    on_disk |= {p.parent.name + "/" for p in PACKAGE.glob("*/__init__.py")}
    assert listed == on_disk


def code_lines(source):
    """The lines of ``source`` that hold code: no blank line, comment or docstring."""
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    lines = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip | {tokenize.ENDMARKER}:
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def test_code_lines_counts_code_only():
    source = '''"""A module.

Its docstring.
"""

# a comment
X = (
    1,  # a trailing comment
)


def f():
    """A function."""
    return """a string
that is not a docstring"""
'''
    assert code_lines(source) == 6


def test_no_module_is_long():
    """No module over about MAX_CODE_LINES lines of code (docstrings apart): a longer one
    holds two concepts. KNOWN_LONG may only shrink."""
    counts = {
        path.relative_to(PACKAGE).as_posix(): code_lines(path.read_text(encoding="utf-8"))
        for path in PACKAGE.rglob("*.py")
    }
    long = {name: n for name, n in counts.items() if n > MAX_CODE_LINES}
    grown = {n: (long[n], KNOWN_LONG.get(n)) for n in long if long[n] > KNOWN_LONG.get(n, 0)}
    assert grown == {}, f"modules over {MAX_CODE_LINES} lines of code (now, listed): {grown}"
    split = sorted(set(KNOWN_LONG) - set(long))
    assert split == [], f"no longer over {MAX_CODE_LINES} lines: remove them from KNOWN_LONG"


def packages():
    """Every package of sk_multitask, dotted (``sk_multitask.training.callbacks``)."""
    return sorted(".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py"))


def init_path(package):
    """The ``__init__.py`` of a dotted package name."""
    return ROOT.joinpath(*package.split("."), "__init__.py")


def is_lazy(package):
    """Whether the package's ``__init__`` imports its public names on first use."""
    return "_lazy_exports(" in init_path(package).read_text(encoding="utf-8")


@pytest.mark.parametrize("package", packages())
def test_packages_export_names_that_exist(package):
    """Each name of a package's ``__all__`` imports through the package, and is defined in
    one of its modules (the package's own names, not another's)."""
    module = importlib.import_module(package)
    foreign = []
    for name in module.__all__:
        obj = getattr(module, name)
        assert name in dir(module)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and package != "sk_multitask":
            if not obj.__module__.startswith(package + "."):
                foreign.append(f"{package}.{name}")
    known = sorted(name for name in FOREIGN_EXPORTS if name.rpartition(".")[0] == package)
    assert foreign == known, f"defined in another package: {foreign}"
    if is_lazy(package):
        with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'nope'"):
            module.nope  # noqa: B018


def lazy_exports(package):
    """The names a lazy package imports on first use: those its ``__init__`` does not
    define itself."""
    return set(importlib.import_module(package).__all__) - top_level_names(init_path(package))


def test_internal_code_imports_from_the_defining_module():
    """No module imports a lazy package's re-exported name from the package: import-linter
    would see an edge to the package, not to the module that defines the name."""
    lazy = {p: lazy_exports(p) for p in packages() if is_lazy(p)}
    found = []
    for path in PACKAGE.rglob("*.py"):
        here = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        here_package = here.removesuffix(".__init__") if path.name == "__init__.py" else here
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = here_package.split(".")
                base = base[: len(base) - node.level + (path.name == "__init__.py")]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            reached = {alias.name for alias in node.names} & lazy.get(target, set())
            found += [f"{here}: from {target} import {name}" for name in sorted(reached)]
    assert found == []


def test_exceptions_hold_every_class_users_catch():
    """Every exception class the package defines is in sk_multitask.exceptions (the same
    object wherever it is reached), but for the few users never see."""
    exceptions = importlib.import_module("sk_multitask.exceptions")
    public = {getattr(exceptions, name) for name in exceptions.__all__}
    assert all(issubclass(cls, Exception) for cls in public)
    import sk_multitask

    assert sk_multitask.InconsistentVersionWarning is exceptions.InconsistentVersionWarning
    defined = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__main__.py":
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for attr, obj in vars(importlib.import_module(name)).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name:
                defined[f"{relative(name)}.{attr}"] = obj
    others = {name for name, cls in defined.items() if cls not in public}
    assert sorted(others - set(INTERNAL_EXCEPTIONS)) == []
    assert sorted(set(INTERNAL_EXCEPTIONS) - others) == []


def test_torch_free_modules_import_without_torch():
    """Each torch-free module, and the packages that hold them, import where torch,
    torchvision and skorch cannot be imported; so does every name of the wholly torch-free
    packages and of sk_multitask.exceptions."""
    modules = TORCH_FREE_IMPORTS + contract("torch-free")["source_modules"]
    result = run_python_without(
        f"""
        import importlib, sys
        for name in {modules!r}:
            module = importlib.import_module(name)
            if name in ("sk_multitask.evaluation", "sk_multitask.targets"):
                for attr in module.__all__:
                    getattr(module, attr)
        from sk_multitask import exceptions
        for attr in exceptions.__all__:
            getattr(exceptions, attr)
        assert not {{"torch", "torchvision", "skorch"}} & set(sys.modules), sorted(sys.modules)
        print("imported")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"
