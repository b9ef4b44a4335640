"""`gen kiosk --install-service`: a systemd unit that runs the same kiosk command, unattended.

The unit is written, never enabled: enabling starts a fullscreen program, which is the user's call.
It runs exactly the command line given (minus the install options) with this Python, in this folder,
and restarts it if it fails (a crash, a GPU that went away) but not after q.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import sys
from pathlib import Path

from gen.runtime.errors import GenError
from gen.runtime.files import check_output_path, write_text_atomic

INSTALL_OPTIONS = {"--install-service": 0, "--unit": 1, "--overwrite": 0}  # option -> how many values follow it
USER_UNITS = Path("~/.config/systemd/user").expanduser()
SYSTEM_UNITS = (Path("/etc/systemd/system"), Path("/lib/systemd/system"), Path("/usr/lib/systemd/system"))
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def default_unit_path() -> Path:
    return USER_UNITS / "gen-kiosk.service"


def kiosk_args(argv: list[str]) -> list[str]:
    """The arguments after `kiosk` in argv, without --install-service, --unit PATH and --overwrite."""
    if "kiosk" not in argv:
        raise GenError("cannot find the kiosk command in the command line")
    args, out, skip = argv[argv.index("kiosk") + 1 :], [], 0
    for arg in args:
        if skip:
            skip -= 1
        elif arg in INSTALL_OPTIONS:
            skip = INSTALL_OPTIONS[arg]
        elif not arg.startswith("--unit="):
            out.append(arg)
    return out


def systemd_quote(arg: str) -> str:
    """One ExecStart word: double-quoted when needed; % and $ doubled (systemd's specifiers and variables)."""
    if not _PLAIN.fullmatch(arg):
        arg = '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg.replace("%", "%%").replace("$", "$$")


def unit_text(args: list[str], serve: bool, user_unit: bool, enable: str, cwd: Path | None = None) -> str:
    command = [sys.executable, "-m", "gen.cli", "kiosk", *args]
    graphical = not serve  # a window needs the user's graphical session; a server needs nothing
    lines = [
        "# Written by gen kiosk --install-service. Start it now and at every boot/login with:",
        f"#   {enable}",
        "[Unit]",
        "Description=gen kiosk: " + ("frames served over HTTP" if serve else "fullscreen latent walk / dream"),
        *(["After=graphical-session.target", "PartOf=graphical-session.target"] if graphical and user_unit
          else ["After=network.target"]),
        "",
        "[Service]",
        f"WorkingDirectory={systemd_quote(str(cwd or Path.cwd()))}",
        "ExecStart=" + " ".join(systemd_quote(a) for a in command),
        "Restart=on-failure",  # q exits 0 and stays stopped; an error exits non-zero and comes back
        "RestartSec=5",
        "Environment=PYTHONUNBUFFERED=1",
    ]
    if not user_unit:
        lines.append(f"User={getpass.getuser()}")
        if graphical:
            lines.append(f"Environment=DISPLAY={os.environ.get('DISPLAY', ':0')}")
    wanted = "graphical-session.target" if graphical and user_unit else ("default.target" if user_unit
                                                                        else "multi-user.target")
    lines += ["", "[Install]", f"WantedBy={wanted}", ""]
    return "\n".join(lines)


def enable_command(user_unit: bool, unit: str = "gen-kiosk.service") -> str:
    """`unit` is a name in systemd's search path, or an absolute path (systemctl enable links it)."""
    unit = shlex.quote(unit)
    if user_unit:
        return f"systemctl --user daemon-reload && systemctl --user enable --now {unit}"
    return f"sudo systemctl daemon-reload && sudo systemctl enable --now {unit}"


def install_service(path: Path | None, argv: list[str], serve: bool, overwrite: bool = False) -> tuple[Path, str]:
    """Write the unit for this command line (replacing an existing one only with `overwrite`); returns its path
    and the command that enables it."""
    path = (path or default_unit_path()).expanduser().absolute()
    if path.suffix != ".service":
        raise GenError(f"'{path}': a systemd unit's name ends in .service")
    user_unit = path.parent not in SYSTEM_UNITS  # a system unit runs at boot, as User=, outside any session
    if path.parent == USER_UNITS:
        path.parent.mkdir(parents=True, exist_ok=True)
    check_output_path(path, overwrite=overwrite)
    refused = f"cannot write '{path}'"
    advice = "run the same command with sudo, or give --unit a path in a folder you can write"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise GenError(f"{refused}: no permission to write in '{path.parent}'; {advice}")
    known = path.parent == USER_UNITS or not user_unit
    enable = enable_command(user_unit, path.name if known else str(path))
    try:
        write_text_atomic(path, unit_text(kiosk_args(argv), serve, user_unit, enable))
    except OSError as e:  # (root is refused too, on a read-only file system or in /proc)
        raise GenError(f"{refused} ({e.strerror or e}); {advice}") from None
    return path, enable
