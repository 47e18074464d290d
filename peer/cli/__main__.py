"""`python -m peer.cli`: the `peer` command."""

import sys

from peer.cli.main import main

sys.exit(main())
