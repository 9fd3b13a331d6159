import sys

from ust.daemon.sessiond.main import main

sys.exit(main())
