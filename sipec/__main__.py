import sys

from sipec.cli import main

sys.exit(main())
