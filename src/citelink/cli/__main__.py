"""`python -m citelink.cli`: the `citelink` command."""

import sys

from . import main

sys.exit(main())
