"""Benchmarks: corework against its peers on the same workloads.

Run ``python -m benchmarks --help`` from the repository root. Each repeat of each
(workload, library) case runs in a fresh process with a hard time limit; the runner prints
the median seconds per library and corework's ratio against the best other library.
Results are not asserted in tests: they depend on the machine.
"""
