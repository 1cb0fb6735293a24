"""Allow ``python -m orcastra``."""

from orcastra.cli import main

main()
