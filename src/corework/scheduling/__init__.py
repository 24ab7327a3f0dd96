"""The scheduling layer: which chunk runs where and when, and what becomes of it. The
scheduler hands chunks to an engine's slots, keeps deadlines and retries, recovers from
lost workers and settles each task's future; map jobs cut inputs into chunks and put the
results back in order. It knows engines only through :class:`corework.engines.Engine`."""
