"""`python -m gen.runtime.cli` and `gen.runtime.cli:main`: the old names of `python -m gen.cli` and
`gen.cli:main`, kept because systemd units written by earlier `gen kiosk --install-service` run the
first and a `gen` script installed by an earlier version calls the second. The CLI layer is imported
only when one of them runs, so importing the runtime never pulls in the layers above it."""


def main() -> None:
    from gen.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
