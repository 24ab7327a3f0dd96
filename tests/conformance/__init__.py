"""CPython's own ``test.test_concurrent_futures``, run against corework's drop-in executors.

Nothing of CPython's tests is copied here: they are imported at run time from the running
interpreter's ``test`` package (a package on 3.11+ where the distribution ships it, one
module on 3.10). ``python -m tests.conformance`` (see ``runner``) runs them once per engine,
each engine in a child process of its own (``child``), which

1. sets ``concurrent.futures.ProcessPoolExecutor``/``ThreadPoolExecutor``/
   ``InterpreterPoolExecutor`` to corework's classes (``swap``) *before* importing the
   tests, so the tests' own mixins (``executor_type = futures.ThreadPoolExecutor``) and
   every ``futures.XPoolExecutor(...)`` in a test body construct corework's executors; the
   tests that start a fresh Python (``assert_python_ok('-c', ...)``) get the same swap as a
   first line of their script;
2. picks the test classes built on the engine's mixins (``ThreadPoolMixin`` for threads,
   the ``ProcessPool*Mixin`` for processes, ``InterpreterPoolMixin`` for sub-interpreters
   where CPython has one and ``ThreadPoolMixin`` otherwise);
3. leaves out the tests named in ``skips`` (each with its reason) and runs the rest with
   ``unittest``, reporting each test's outcome as a line of JSON to the parent.

The parent bounds every test (``faulthandler`` dumps every thread's stack and ends a child
whose test runs too long; the test counts as failed and a new child runs the rest) and
the whole run, and prints, per engine,
``CPython test_concurrent_futures: P/N pass (S skipped by list)``.
"""
