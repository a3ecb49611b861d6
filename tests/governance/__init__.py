"""Tests of `governance`."""
