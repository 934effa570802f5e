"""``python -m fnnet.bench``: the same options as ``fnnet bench``."""

import os
import sys

if __name__ == "__main__":  # importing this module (pydoc, a package walk) runs nothing
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from fnnet.cli.bench import main

    sys.exit(main())
