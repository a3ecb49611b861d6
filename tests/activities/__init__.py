"""Tests of `activities`."""
