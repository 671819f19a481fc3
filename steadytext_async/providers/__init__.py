"""Backends behind the router. See :mod:`steadytext_async.providers.base` for the interface."""

from .base import Capabilities, Provider, ProviderChunk, ProviderDone
from .mock import MockProvider

__all__ = ["Capabilities", "MockProvider", "Provider", "ProviderChunk", "ProviderDone"]
