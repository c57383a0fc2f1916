"""Pure IR -> IR passes. Each back end lists the passes it runs (``PASSES``)."""

from cdcrouter.ir.passes.logic import drop_disabled, flatten_logic

__all__ = ["drop_disabled", "flatten_logic"]
