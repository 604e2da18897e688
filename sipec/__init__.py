"""SIPEC services."""
