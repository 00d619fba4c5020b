"""Infrastructure every app shares: background runs, domain errors, the audit log,
fetch-and-authorize access helpers, API input and error handling, markdown rendering,
charts and the health probes.

It depends on nothing of ours but labeling.models (projects, memberships and the audit
event table are what access and audit are about); guidelines/, training/ and accounts/
import these instead of reaching into labeling/.
"""
