"""``python -m trompe``: the same as the ``trompe`` command."""

import sys

from trompe.cli import main

sys.exit(main())
