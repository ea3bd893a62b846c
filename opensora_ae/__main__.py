"""``python -m opensora_ae COMMAND ...`` = the ``opensora-ae`` console command."""

import sys

from opensora_ae.cli import main

sys.exit(main())
