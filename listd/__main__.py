"""``python3 -m listd`` runs the daemon."""

import sys

from listd.cli.listd import main

sys.exit(main())
