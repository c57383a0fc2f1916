"""cdcrouter: PostgreSQL changes to Kafka business events, routed by declarative YAML rules."""

from cdcrouter.versions import package_version

__version__ = package_version()  # pyproject.toml's version, as installed
__all__ = ["__version__"]
