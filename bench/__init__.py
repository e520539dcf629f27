"""tpp.bench: the `tpp-bench` microbenchmark CLI.

Modules: `timing` (warm-up, repetitions, median and spread), `repeat` (a
JIT-compiled loop that calls a kernel N times, so kernel-level timings carry no
Python overhead), `baselines` (numpy's fastest expression per kind, as a
table), `suites` (rows: unary, binary, compile time, the quick suite),
`report` (table and JSON output), `cli` (argument parsing).

Nothing in tpp imports this package.
"""
