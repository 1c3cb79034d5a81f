"""Griffe extension for the API reference: the package's docstrings as mkdocstrings wants them.

- ``#:`` comments document module constants. The package documents a constant with
  ``#:`` comment lines directly above it (Sphinx's convention), but griffe only reads
  string docstrings: this hands such a comment to the attribute. A public constant of a
  public module left with no documentation is logged as a warning, which
  ``mkdocs build --strict`` turns into a failure, so that no name of an ``__all__``
  silently drops out of the reference (objects without docstrings are not shown).
- Sphinx roles (``:class:`~sk_multitask.MultiTaskImageEstimator```, ``:meth:`fit```)
  become links to the reference for the objects it renders (the public names of
  reference.py, and their methods), and code for others (internal modules, skorch,
  scikit-learn...), instead of showing up raw: the docstrings also serve ``help()``.
- A page of the site named by its file in code (See ``docs/backbones.md``, which
  ``help()`` shows as it is) becomes a link to the page, titled as in mkdocs.yml's
  navigation: See [Backbones](../backbones.md). A file that is no page of the navigation
  is logged as a warning.
"""

import functools
import importlib.util
import posixpath
import re
from pathlib import Path

import griffe
import yaml

logger = griffe.logger
#: A role: ``:class:`path```, ``:class:`~path``` (shows the last name only) or
#: ``:meth:`title <path>```.
ROLE = re.compile(r":(?:class|meth|func|mod|attr|exc|data|obj):`(~?)([^`<]*?)\s*(?:<([\w.]+)>)?`")
PACKAGE = "sk_multitask"
#: A page of the site named by its file in code, as a docstring writes it.
PAGE = re.compile(r"``docs/([\w/-]+\.md)``")


class PackageDocstrings(griffe.Extension):
    def on_attribute_instance(self, *, attr, **kwargs):
        if attr.docstring is not None or not attr.parent.is_module or attr.lineno is None:
            return
        lines = attr.lines_collection[attr.filepath]
        comment, i = [], attr.lineno - 2
        while i >= 0 and lines[i].lstrip().startswith("#:"):
            comment.insert(0, lines[i].lstrip()[2:].strip())
            i -= 1
        if comment:
            attr.docstring = griffe.Docstring(
                "\n".join(comment), lineno=i + 2, endlineno=attr.lineno - 1, parent=attr
            )

    def on_package(self, *, pkg, **kwargs):
        for module in _public_modules(pkg):
            for member in module.members.values():
                if member.is_alias:
                    continue
                if member.is_attribute and member.is_public and member.docstring is None:
                    logger.warning(
                        f"{member.path} is public but undocumented: "
                        "put a '#:' comment above it or a docstring below it"
                    )
        _link_roles(pkg)


def _public_modules(module):
    yield module
    for member in module.modules.values():
        if not member.name.startswith("_"):
            yield from _public_modules(member)


def _link_roles(obj):
    """Rewrite the Sphinx roles and page names of the docstrings of ``obj`` and everything
    it defines."""
    if obj.docstring is not None:
        value = ROLE.sub(lambda match: _reference(obj, *match.groups()), obj.docstring.value)
        obj.docstring.value = PAGE.sub(lambda match: _page_link(obj, match[1]), value)
    for member in obj.members.values():
        if not member.is_alias:
            _link_roles(member)


def _reference(obj, tilde, text, target):
    """A link to the reference entry of the role's target, or code where it has none."""
    path = target or text
    shown = " ".join(text.split()) if target else path.rsplit(".", 1)[-1] if tilde else path
    head, dot, rest = path.partition(".")
    try:
        full = _defined_path((head if head == PACKAGE else obj.resolve(head)) + dot + rest)
        found = obj.modules_collection[full]
        full = found.canonical_path
        rendered = found.docstring is not None and _on_a_page(full)
    except (griffe.NameResolutionError, KeyError, griffe.AliasResolutionError):
        rendered = False
    return f"[`{shown}`][{full}]" if rendered else f"`{shown}`"


def _page_link(obj, page):
    """A link from a reference page to the page of the site at ``docs/<page>``."""
    title = _page_titles().get(page)
    if title is None:
        logger.warning(f"{obj.path}: docs/{page} is not a page of mkdocs.yml's nav")
        return f"``docs/{page}``"
    here = posixpath.dirname(_reference_module().page_uri(PACKAGE))
    return f"[{title}]({posixpath.relpath(page, here)})"


@functools.cache
def _page_titles():
    """Page of the site -> its title in mkdocs.yml's nav."""
    config = Path(__file__).resolve().parents[1] / "mkdocs.yml"
    titles, entries = {}, list(yaml.safe_load(config.read_text(encoding="utf-8"))["nav"])
    while entries:
        for title, value in entries.pop().items():
            if isinstance(value, list):
                entries += value
            else:
                titles[value] = title
    return titles


@functools.cache
def _reference_module():
    """docs/reference.py, the pages of the API reference."""
    spec = importlib.util.spec_from_file_location(
        "_reference_pages", Path(__file__).with_name("reference.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _reference_pages():
    """Public name -> the path its reference page renders (docs/reference.py)."""
    return _reference_module().documented_paths()


def _defined_path(path):
    """``path`` with a public name (``sk_multitask.load``) replaced by where it is defined."""
    for public, defined in _reference_pages().items():
        if path == public or path.startswith(public + "."):
            return defined + path.removeprefix(public)
    return path


def _on_a_page(path):
    """Whether a page of the reference renders ``path``: a public name or its member."""
    rendered = set(_reference_pages().values())
    return path in rendered or path.rpartition(".")[0] in rendered
