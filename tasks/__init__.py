"""Tasks register themselves on import; one line per plugin (registry names match file names)."""

from tasks import cifar10  # noqa: F401
from tasks import synthetic_textures  # noqa: F401
from tasks import stl10  # noqa: F401
from tasks import synthetic_speech  # noqa: F401
from tasks import fsdd  # noqa: F401
from tasks import librispeech  # noqa: F401
