"""Methods register themselves on import; one line per plugin (registry names match file names)."""

from methods import gim  # noqa: F401
from methods import random_init  # noqa: F401
