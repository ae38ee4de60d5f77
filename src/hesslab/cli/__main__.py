"""``python -m hesslab.cli``: the ``hesslab`` command (used under ``torchrun``)."""

import sys

from hesslab.cli import main

sys.exit(main())
