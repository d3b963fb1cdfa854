"""``python -m flare_vlp`` is the ``flare-vlp`` command."""

import sys

from flare_vlp.cli import main

sys.exit(main())
