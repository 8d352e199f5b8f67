"""The experiments (one module each) and the suites that select them."""
