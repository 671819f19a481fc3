"""The engine: the one crossing between the caller's event loop and local generation (see ``engine.py``)."""

from .engine import Engine, engine
from .portal import Portal

__all__ = ["Engine", "Portal", "engine"]
