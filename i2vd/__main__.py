import sys

from i2vd.cli.commands import main

sys.exit(main())
