"""``python -m sk_multitask.cli``: the command line."""

import sys

from ._main import main

sys.exit(main())
