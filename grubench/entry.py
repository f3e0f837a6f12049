"""The console scripts `grubench-train` and `grubench-bench`: each applies grubench's process
settings (`grubench.runtime.configure`) before it imports its command, and so before JAX is
imported. (Their `main` functions apply them too, for `python -m` and in-process callers.)"""

from __future__ import annotations

import sys

from grubench import runtime


def train() -> None:
    runtime.configure()
    from grubench.train import main

    main()


def bench() -> None:
    if "--isolated" not in sys.argv[1:]:  # then each timed process sets its own, or none
        runtime.configure()
    from grubench.bench import main

    sys.exit(main())
