"""``python -m livepatch_lab.cli``, as the ``livepatch-lab`` script."""
import sys

from . import main

sys.exit(main())
