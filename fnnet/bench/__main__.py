"""``python -m fnnet.bench``: the same options as ``fnnet bench``."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fnnet.cli.bench import main  # noqa: E402

sys.exit(main())
