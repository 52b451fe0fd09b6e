"""`python -m diffinpaint ...` (what `accelerate launch -m diffinpaint ...` runs on every process)."""
import sys

from .cli import main

sys.exit(main())
