"""``python -m chaos``: the full run; ``python -m chaos --short`` the quick one."""

from chaos.cli import main

raise SystemExit(main())
