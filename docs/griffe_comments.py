"""Griffe extension for the API reference: ``#:`` comments document module constants.

The package documents a constant with ``#:`` comment lines directly above it (Sphinx's
convention), but griffe only reads string docstrings: this hands such a comment to the
attribute. A public constant of a public module left with no documentation at all is
logged as a warning, which ``mkdocs build --strict`` turns into a failure, so that no
name of an ``__all__`` silently drops out of the reference.
"""

import griffe

logger = griffe.logger


class CommentDocstrings(griffe.Extension):
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
                if (
                    not member.is_alias
                    and member.is_attribute
                    and member.is_public
                    and member.docstring is None
                ):
                    logger.warning(
                        f"{member.path} is public but undocumented: "
                        "put a '#:' comment above it or a docstring below it"
                    )


def _public_modules(module):
    yield module
    for member in module.modules.values():
        if not member.name.startswith("_"):
            yield from _public_modules(member)
