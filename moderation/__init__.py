"""Moderation policies, the venue managers' queue, and their decisions."""
