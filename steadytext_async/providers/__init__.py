"""Backends behind the router. See :mod:`steadytext_async.providers.base` for the interface."""

from .base import Capabilities, Provider, ProviderChunk, ProviderDone

__all__ = ["Capabilities", "Provider", "ProviderChunk", "ProviderDone"]
