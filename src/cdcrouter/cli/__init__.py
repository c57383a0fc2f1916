"""Command-line interface. Each concern registers its own commands in its own module."""
