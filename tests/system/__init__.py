"""Tests of the whole stack: CLI end to end, faults, scale-out, deployment files."""
