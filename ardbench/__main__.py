"""``python -m ardbench`` = the ``ardbench`` command."""

import sys

from .cli import main

sys.exit(main())
