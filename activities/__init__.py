"""Chorus activities: all I/O (LLM providers, the agent catalog) happens here, never in workflows.

Activities are methods of classes that receive their clients in ``__init__`` (built once per
worker in ``worker.py``).
"""

from activities.catalog import CatalogActivities
from activities.llm import LLMActivities, ProviderClients

__all__ = ["CatalogActivities", "LLMActivities", "ProviderClients"]
