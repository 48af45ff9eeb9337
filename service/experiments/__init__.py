"""A/B experiments: weighted sticky assignment of users to configurations, measured per arm."""
