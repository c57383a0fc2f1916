"""Re-export of :mod:`cdcrouter.ir.span` (positions belong to the IR layer, which filters build on)."""

from cdcrouter.ir.span import NO_SPAN, Span

__all__ = ["NO_SPAN", "Span"]
