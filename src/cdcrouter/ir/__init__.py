"""The typed filter IR (``nodes``) and pure IR -> IR passes (``passes``)."""

from cdcrouter.ir.nodes import *  # noqa: F403
from cdcrouter.ir.nodes import __all__  # noqa: F401
