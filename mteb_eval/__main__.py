"""``python -m mteb_eval``: MTEB scores and wall time, plain sentence-transformers vs st_backend."""

import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(main())
