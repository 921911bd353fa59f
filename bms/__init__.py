"""Booking management: resources, rules, reservations, recurrence, quotas, availability, waitlist."""
