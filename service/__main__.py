"""``python -m service [serve] --model-uri ...``"""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
