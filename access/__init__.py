"""Doors, credentials, access modes, desired state, transitions, decisions, events,
and the Controller protocol that drivers implement. Never imports bms or vms."""
