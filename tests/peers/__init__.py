"""The peers' own test suites, run against corework (``python -m tests.peers``).

Where users already are, corework must pass the tests its peers wrote for themselves:
joblib's ``test_parallel`` with corework as joblib's default backend, and its
backend-parametrised tests with a corework case beside loky's; scikit-learn's
``sklearn.utils.tests.test_parallel`` on the corework backend; tqdm's
``tests_concurrent`` with corework's drop-in executors in place of the standard
library's; dask's ``dask.tests.test_multiprocessing`` with corework's
``ProcessPoolExecutor`` and with a :class:`corework.Pool` as dask's pool.

joblib, scikit-learn and dask ship their tests in their packages (the installed version's
are run); tqdm's come from its sdist, fetched by version into ``~/.cache/corework``.
Nothing of theirs is copied into this repository. A test that checks a private detail of
loky or the standard library is listed in ``peer_skips.py`` with its reason; every other must
pass. The pytest plugin that puts corework in place is ``peer_plugin``.
"""
