"""Griffe extension for the API reference: the package's docstrings as mkdocstrings wants them.

- ``#:`` comments document module constants. The package documents a constant with
  ``#:`` comment lines directly above it (Sphinx's convention), but griffe only reads
  string docstrings: this hands such a comment to the attribute. A public constant of a
  public module left with no documentation is logged as a warning, which
  ``mkdocs build --strict`` turns into a failure, so that no name of an ``__all__``
  silently drops out of the reference (objects without docstrings are not shown).
- Sphinx roles (``:class:`~sk_multitask.targets.Task```, ``:meth:`fit```) become links
  to the reference for the package's own objects, and code for others (skorch,
  scikit-learn...), instead of showing up raw: the docstrings also serve ``help()``.
"""

import re

import griffe

logger = griffe.logger
#: A role: ``:class:`path```, ``:class:`~path``` (shows the last name only) or
#: ``:meth:`title <path>```.
ROLE = re.compile(r":(?:class|meth|func|mod|attr|exc|data|obj):`(~?)([^`<]*?)\s*(?:<([\w.]+)>)?`")
PACKAGE = "sk_multitask"


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
    """Rewrite the Sphinx roles of the docstrings of ``obj`` and everything it defines."""
    if obj.docstring is not None:
        obj.docstring.value = ROLE.sub(
            lambda match: _reference(obj, *match.groups()), obj.docstring.value
        )
    for member in obj.members.values():
        if not member.is_alias:
            _link_roles(member)


def _reference(obj, tilde, text, target):
    """A link to the reference entry of the role's target, or code where it has none."""
    path = target or text
    shown = " ".join(text.split()) if target else path.rsplit(".", 1)[-1] if tilde else path
    head, dot, rest = path.partition(".")
    try:
        full = (head if head == PACKAGE else obj.resolve(head)) + dot + rest
        rendered = obj.modules_collection[full].docstring is not None
    except (griffe.NameResolutionError, KeyError, griffe.AliasResolutionError):
        rendered = False
    return f"[`{shown}`][{full}]" if rendered else f"`{shown}`"
