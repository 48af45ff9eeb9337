"""Sub-commands of `ladder`, one module each; heavy imports stay inside the commands."""
