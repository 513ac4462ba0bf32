"""Performance measurement: the benchmark (:mod:`stcsnn.perf.bench`, what ``stcsnn bench`` measures and how),
its measurement primitives (:mod:`stcsnn.perf.measure`) and its command line (:mod:`stcsnn.perf.commands`)."""
