"""``python -m segllm_training.mrseg``: see :mod:`segllm_training.mrseg.cli`."""

import sys

from .cli import main

sys.exit(main())
