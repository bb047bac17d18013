"""`python -m mdpipe.publisher --config FILE [--set key=value ...] [--instance NAME]`."""

import sys

from mdpipe.publisher.cli import main

sys.exit(main())
