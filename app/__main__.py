"""`python -m app [PATH]`: start the desktop app, optionally opening a project or study."""
import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
