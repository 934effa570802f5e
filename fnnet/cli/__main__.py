"""``python -m fnnet.cli``: the ``fnnet`` command."""

import sys

if __name__ == "__main__":  # importing this module (pydoc, a package walk) runs nothing
    from fnnet.cli import main

    sys.exit(main())
