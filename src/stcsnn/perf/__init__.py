"""Performance measurement: the benchmark (:mod:`stcsnn.perf.bench`, what ``stcsnn bench`` measures and how),
its measurement primitives (:mod:`stcsnn.perf.measure`) and the entry point of its measuring processes
(:mod:`stcsnn.perf.commands`); its command line is :mod:`stcsnn.cli.perf`."""
