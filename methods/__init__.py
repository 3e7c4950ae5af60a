"""Methods register themselves on import; one line per plugin (registry names match file names)."""

from methods import gim  # noqa: F401
from methods import cpc  # noqa: F401
from methods import supervised  # noqa: F401
from methods import greedy_supervised  # noqa: F401
from methods import random_init  # noqa: F401
from methods import gim_no_bptt  # noqa: F401
from methods import gim_no_ar  # noqa: F401
from methods import mfcc  # noqa: F401
