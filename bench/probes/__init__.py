"""Probes: what a worker runs for the system experiments' cases.

Kept apart from the experiment modules (which import pandas and matplotlib)
because the worker forks servers from its own image: a probe imports only
what its measurement needs.
"""
