import sys

from palrm.bench.cli import main

sys.exit(main())
