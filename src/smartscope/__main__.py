"""``python -m smartscope``: the command line (as the ``smartscope`` script)."""

from smartscope.cli import main

if __name__ == "__main__":
    main()
