"""``python -m saelens_tokenlabel ...`` is ``tokenlabel ...``."""

from .cli import main

raise SystemExit(main())
