"""Temporal wiring: the ``ChorusPlugin`` and the parts it carries.

Converter, codec, failure converter, sandbox pass-through, interceptors, workflows and
activities: one plugin used by the worker, the SDK client, the replay tests and the fixtures.
"""
