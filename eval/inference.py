"""Moved to ``ricl.inference`` (the core's one path from prompts to predictions);
this name stays while the grid is being split and goes with it."""

from ricl.inference import *  # noqa: F401,F403
from ricl.inference import check_normalize as _check_normalize  # noqa: F401
