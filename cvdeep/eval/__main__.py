"""``python -m cvdeep.eval``: the benchmark (same options as ``cvdeep bench``)."""
import sys

from .runner import main

sys.exit(main())
