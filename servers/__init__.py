"""What runs inside a server process: transports, workloads, roles, the entry point.

Nothing here imports from ``harness``: the harness drives servers, never the reverse.
"""
