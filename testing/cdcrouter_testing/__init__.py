"""Test support, kept out of the wheel: pytest fixtures over the real local stack, a fake Confluent Cloud
API and a pytest runner for CI. pytest finds it through ``pythonpath`` in pyproject.toml."""
