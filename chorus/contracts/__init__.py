"""Pure contracts: what crosses a process boundary, and the rules on it.

Payload models (``models``: runs, agents, LLM calls, callbacks; ``drafting``: drafts and
their edit algebra), Temporal names (``names``), error types (``errors``), size and count
limits (``limits``) and input validation (``validation``). No I/O, no clock, no randomness:
this is the only Chorus code the workflow sandbox passes through
(``chorus.runtime.plugin.SANDBOX_PASSTHROUGH``), so workflows, activities, the SDK and the
replay tests all read the same definitions.
"""
