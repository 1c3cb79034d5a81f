"""The ``sk-multitask`` command line: ``fit``, ``lr-find``, ``predict``, ``evaluate``,
``export`` and ``demo`` on a table of image paths and targets.

- ``_main``: the subcommands, the parser and :func:`main`;
- ``_io``: the command line's files (tables in and out, image inputs, model files);
- ``_options``: its one table of options.
"""

from ._main import build_parser, invoked_as, main

__all__ = ["build_parser", "invoked_as", "main"]
