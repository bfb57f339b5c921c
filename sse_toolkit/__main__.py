"""``python -m sse_toolkit``: the hub command (see `sse_toolkit.cli`)."""

from .cli import main

raise SystemExit(main())
