import sys

from i2vd.cli import main

sys.exit(main())
