"""`python -m zephyr_train` (and so `accelerate launch -m zephyr_train ...`)."""

import sys

from zephyr_train.cli import main

sys.exit(main())
