"""``python -m stcsnn`` is the same as the ``stcsnn`` command."""

from stcsnn.cli import main

raise SystemExit(main())
