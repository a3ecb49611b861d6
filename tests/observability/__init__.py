"""Tests of `observability`."""
