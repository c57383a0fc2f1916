"""Test support: pytest fixtures over the real local stack and a pytest runner for CI."""
