"""From a request and its configuration to a plan: configurations, live reload, the plan."""
