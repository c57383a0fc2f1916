"""Pytest fixtures over the real local stack (filled in by the stack work)."""
