"""The benchmark suite: dotmac-events against the raw clients, run with ``python -m benchmarks``.

One module per broker (memory, redis_streams, kafka), one for observability hooks, one for
FastStream, and the runner that starts the brokers and interleaves every pair. See README.md.
"""
