"""``python -m segllm_ros.demo``: see ``segllm_ros.demo.main``."""

import sys

from segllm_ros.demo.main import main

sys.exit(main())
