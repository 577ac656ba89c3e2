"""``python -m ragc.cli``: the ``ragc`` command."""

import sys

from ragc.cli import main

sys.exit(main())
