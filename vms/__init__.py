"""Visitor management: visitors, visits, invitations and QR codes, check-in/out, on-site list."""
