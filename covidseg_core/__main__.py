"""`python -m covidseg_core ...` (what `torchrun -m covidseg_core train ...` runs): the `covidseg` command."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
