"""The kernel every domain builds on: database and units of work, users and sessions, security,
the audit trail, the outbox, errors, request dependencies and message catalogs. Imports config only."""
