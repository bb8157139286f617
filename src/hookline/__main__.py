from __future__ import annotations

from hookline import cli

cli.main()
