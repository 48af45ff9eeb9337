"""The ladder evaluation: tasks, runs, metrics, reports and prices."""
