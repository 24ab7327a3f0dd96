"""The transport layer: how a task, its function and its result travel between processes.

``picklers`` (by value, by reference, memoryviews out of band) · ``packing`` (a pickle
with its large buffers in shared-memory ``segments``) · ``channel`` (framed messages
carrying descriptors) · ``failure`` (the envelope that carries an exception back) ·
``function_key`` (when a function would pickle differently) · ``main_namespace`` (where
``__main__`` functions land in a worker) · ``inherited`` (multiprocessing objects passed
at spawn). Import the module you need; this package exports nothing itself."""

__all__: list[str] = []
