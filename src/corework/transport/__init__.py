"""The transport layer: how a task, its function and its result travel between processes
— pickling with out-of-band buffers in shared-memory segments, the pipe channel, the
failure envelope that carries an exception back, and objects inherited at spawn."""
