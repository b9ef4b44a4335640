"""`python -m gen.runtime.cli`: the old name of `python -m gen.cli`, kept because systemd units written by
earlier `gen kiosk --install-service` run it. It imports the CLI layer only when run, so importing the
runtime never pulls in the layers above it."""

if __name__ == "__main__":
    from gen.cli import main

    main()
