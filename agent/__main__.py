"""`python -m agent` runs the camwatch CLI."""

from agent.cli import main

raise SystemExit(main())
