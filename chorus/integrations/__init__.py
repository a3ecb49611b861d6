"""Outside processes and services Chorus drives.

The embedded local model server and Standard Webhooks signing of run callbacks and budget
alerts.
"""
