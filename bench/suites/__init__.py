"""Built-in suites: quick (CI smoke), default (minutes), full (a lab machine)."""
