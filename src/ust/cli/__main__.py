import sys

from ust.cli import main

sys.exit(main())
