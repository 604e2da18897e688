"""The orchestrator: streams video through the module services and writes the results."""
