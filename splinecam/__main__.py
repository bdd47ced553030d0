import sys

from splinecam.cli import main

sys.exit(main())
