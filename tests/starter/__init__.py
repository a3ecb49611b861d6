"""Tests of `starter`."""
