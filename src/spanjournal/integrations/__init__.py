"""Integrations with agent frameworks: each maps the framework's own "a unit starts / ends" onto one dispatch path.

Each module imports its framework; nothing here is imported by ``import spanjournal``.
"""
