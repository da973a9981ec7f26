"""``python -m benchmarks [--smoke] [--repeat N] [--out DIR] [--only PREFIX...]``."""

from benchmarks.runner import main

raise SystemExit(main())
