"""`python -m palrm.bench ...` is the same as `palrm bench ...`."""

import sys

from palrm.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
