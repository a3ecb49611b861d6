"""Governance policy: PII redaction, model prices, budgets and provider rate/concurrency limits.

Policy decisions live here; the SQL they need lives in :mod:`chorus.storage`.
"""
