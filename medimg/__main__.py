"""``python -m medimg`` is the same as the ``medimg`` command."""

import sys

from medimg.cli.main import main

sys.exit(main())
