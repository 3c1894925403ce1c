"""Whether the compiled twins may be used (``LBCORE_NO_EXTENSIONS=1`` forbids them)."""

import os

NO_EXTENSIONS = bool(os.environ.get("LBCORE_NO_EXTENSIONS"))
