"""``python -m unspool``: the same command line as the ``unspool`` script."""

from ._cli import main

if __name__ == "__main__":
    main()
