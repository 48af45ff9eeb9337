"""The `ladder` command line: one module per command group."""
