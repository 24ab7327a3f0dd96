"""Benchmarks: corework against its peers on the same workloads.

Run ``python -m benchmarks --help`` from the repository root. Each repeat of each
(workload, library) case runs in a fresh process with a hard time limit; the runner prints
the median seconds per library and corework's ratio against the best other library.
The warm tables time a map on a pool made beforehand; the cold ones
(``--workloads cold``, see :mod:`benchmarks.cold`) time whole scripts from process start,
import included. Results are not asserted in tests: they depend on the machine.
"""
