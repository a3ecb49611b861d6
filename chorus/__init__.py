"""Chorus shared package: payload models, task-queue and Temporal names, settings, prices.

Workflows, activities, the worker and the starter all import from here; nothing in this
package performs I/O at import time, so workflow modules can pass it through the sandbox.
"""

__version__ = "0.1.0"
