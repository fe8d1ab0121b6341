"""`python -m sota.bench`: speed and memory of a configuration or of an export (`--from`), the short name of
`python -m sota.tools.bench`, beside `python -m sota.export`."""

import sys

from sota.tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
