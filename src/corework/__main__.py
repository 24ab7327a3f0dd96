"""``python -m corework`` is the ``corework`` command."""

import sys

from .cli import main

sys.exit(main())
