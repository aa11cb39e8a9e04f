"""`python -m covidseg_core.cli ...`: the `covidseg` command."""
import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
