"""Allow ``python -m orcastra``."""

from orcastra.entry import main

main()
