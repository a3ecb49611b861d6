"""Configuration: settings from the environment, their documentation, the agent catalog file."""
