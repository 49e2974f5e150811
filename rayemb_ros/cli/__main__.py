"""`python -m rayemb_ros.cli ...`: the `rayemb` command (how the node is started as a child process)."""

import sys

from rayemb_ros.cli import main

sys.exit(main())
