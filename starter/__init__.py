"""Chorus starter: the ``chorus`` CLI and the Python SDK (``starter.sdk``).

The starter imports workflow names and payload models only, never activity implementations.
"""
