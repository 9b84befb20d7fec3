"""``python -m saelens_tokenlabel.cli``: the `tokenlabel` command."""

import sys

from . import main

sys.exit(main())
