"""``python -m trompe.cli``: the same as the ``trompe`` command (and ``python -m trompe``)."""

import sys

from trompe.cli import main

sys.exit(main())
