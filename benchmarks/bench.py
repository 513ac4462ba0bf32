"""Run the stcsnn benchmark: ``python benchmarks/bench.py [options]`` == ``stcsnn bench [options]``.

See ``src/stcsnn/perf/bench.py`` (``stcsnn bench --help``) for what is measured and how.
"""

import sys

from stcsnn.cli.perf import main

if __name__ == "__main__":
    sys.exit(main())
