"""`python -m gen.runtime.cli`: the old name of `python -m gen.cli`, kept because systemd units written by
earlier `gen kiosk --install-service` run it. The one module of the runtime that imports the CLI layer."""

from gen.cli import main

if __name__ == "__main__":
    main()
