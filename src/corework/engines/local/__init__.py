"""The engines whose workers are threads of this process: ``thread`` (plain threads) and
``interpreter`` (one sub-interpreter, with its own GIL, per thread; the code that runs
inside is ``in_interpreter``, loaded by path), over ``slots`` (a thread per slot) and
``interrupt`` (an exception raised into a running thread). Nothing is imported here: a
thread pool does not load the sub-interpreter machinery, nor the reverse."""
