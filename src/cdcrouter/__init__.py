"""cdcrouter: PostgreSQL changes to Kafka business events, routed by declarative YAML rules."""

__version__ = "0.1.0"
__all__ = ["__version__"]
