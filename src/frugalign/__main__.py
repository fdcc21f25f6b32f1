"""`python -m frugalign ...` and `accelerate launch -m frugalign ...`."""

from frugalign.cli import main

raise SystemExit(main())
