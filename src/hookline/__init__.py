"""hookline: self-hosted webhook delivery with a Svix-compatible API."""

from __future__ import annotations

__version__ = "0.1.0"
