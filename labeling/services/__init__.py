"""Writes to the labeling domain, one module per concern. Views, the API, commands and
tasks call these; they don't save domain models themselves. Services never import tasks
(a service that needs one sends it by name, after commit).

- projects:       create projects
- members:        memberships, invites, accounts, leases of a person, deactivation
- items:          items from candidate sets; re-opening items
- assignment:     the claim (next item, leases, expiry)
- submission:     what every submission shares (idempotency, locks, the gate), skip
- rankings:       a ranking submitted; an item completed
- demonstrations: written answers (the SFT step)
- quality:        item decisions and annotator quality
- review:         adjudication
"""
