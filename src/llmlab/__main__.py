"""`python -m llmlab`: the `llmlab` command, for launchers that start modules (`torchrun -m llmlab ...`)."""

import sys

from llmlab.cli import main

sys.exit(main())
