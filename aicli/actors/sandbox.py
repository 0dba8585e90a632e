"""Running a session's CLI inside Anthropic's sandbox runtime (``srt``).

srt wraps a whole process tree (the CLI, its file tools, the commands its Bash
runs) with bubblewrap on Linux and Seatbelt on macOS: a PID namespace of its
own, a read-only root with only the listed paths bound writable, ``denyRead``
paths hidden, and network only through srt's proxy, which lets through the
hosts ``allowedDomains`` names. The OS enforces it, not code of ours; this
module only says where srt is, whether it works on this machine, and what one
session may reach.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aicli.actors.executables import find_executable
from aicli.actors.mount_points import hold_mount_points
from aicli.errors import SandboxUnavailable

# The one pin of the sandbox runtime. The Makefile installs it, reading this line with sed:
# keep it one plain string literal.
SANDBOX_RUNTIME_VERSION = "0.0.83"
_HOW_TO_INSTALL = (
    "Install it with `make setup` (or `npm install --prefix .tools "
    f"@anthropic-ai/sandbox-runtime@{SANDBOX_RUNTIME_VERSION}` and "
    "`apt-get install bubblewrap socat ripgrep`)"
)
_HOW_TO_TURN_OFF = (
    "or run sessions unsandboxed knowingly with `aicli serve --sandbox off` (AICLI_SANDBOX=off)"
)
# What srt runs on (command, package), by platform.system(); macOS has sandbox-exec built in.
_NEEDS = {
    "Linux": (("bwrap", "bubblewrap"), ("socat", "socat"), ("rg", "ripgrep")),
    "Darwin": (("rg", "ripgrep"),),
}
# The system, readable so that the CLI's tools run: programs, libraries and their
# configuration. Not /opt, /srv, /var, /home, /root, /tmp: those hold other people's data.
SYSTEM_READ = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Secrets under /etc that the system read above would otherwise show.
SYSTEM_SECRETS = (
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/sudoers",
    "/etc/sudoers.d",
)
PROBE_TIMEOUT_S = 30.0
PROBE_ATTEMPTS = 3
# srt's socat bridges carry every byte between a sandbox and srt's proxy. Their TCP ends
# have Nagle on: a request's last piece then waits for the far side's delayed ACK, about
# 40 ms on each API request (measured: 45 KB requests through srt took 45-49 ms, 0.6 ms
# direct). srt takes the socat to run from its policy (``socatPath``), so it gets this one,
# which turns TCP_NODELAY on for every TCP address it is given.
_SOCAT_NODELAY = """#!/bin/sh
for arg do
  shift
  case $arg in
    TCP:*|TCP4:*|TCP6:*|TCP-LISTEN:*|TCP4-LISTEN:*|TCP6-LISTEN:*) arg="$arg,nodelay" ;;
  esac
  set -- "$@" "$arg"
done
exec {socat} "$@"
"""
# srt's proxy is Node, whose sockets have Nagle on as well: the small writes of a streamed
# answer wait for the far side's delayed ACK. Loaded into srt's own Node (NODE_OPTIONS, which
# the launcher removes again, so nothing inside the sandbox gets it), this turns Nagle off on
# every socket it opens or accepts.
_NODE_NODELAY = """const net = require('net');
const emit = net.Server.prototype.emit;
net.Server.prototype.emit = function (event, socket, ...rest) {
  if (event === 'connection' && socket && socket.setNoDelay) socket.setNoDelay(true);
  return emit.call(this, event, socket, ...rest);
};
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  this.setNoDelay(true);
  return connect.apply(this, args);
};
"""


def find_srt(explicit: str | None = None) -> str:
    """srt's path: AICLI_SRT_BIN, then PATH, then the project's .tools (like ``find_claude``)."""
    candidate = explicit or os.environ.get("AICLI_SRT_BIN")
    found = find_executable("srt", candidate)
    if found:
        return found
    if candidate:
        raise SandboxUnavailable(
            f"The sandbox runtime '{candidate}' (AICLI_SRT_BIN) is not an executable file. "
            f"{_HOW_TO_INSTALL}, {_HOW_TO_TURN_OFF}.",
            details={"missing": ["srt"]},
        )
    raise SandboxUnavailable(
        "The sandbox runtime srt was not found (AICLI_SRT_BIN, PATH, .tools). "
        f"{_HOW_TO_INSTALL}, {_HOW_TO_TURN_OFF}.",
        details={"missing": ["srt"]},
    )


def package_dir(executable: str) -> Path:
    """The npm package an executable (or the link npm made to it) belongs to: the nearest
    directory above its real path that holds a package.json."""
    real = Path(os.path.realpath(executable))
    for parent in real.parents:
        if (parent / "package.json").is_file():
            return parent
    return real.parent


def cli_install(claude_bin: str) -> list[str]:
    """The CLI's install: its package and the platform packages beside it (the native
    binary of the pinned CLI is ``@anthropic-ai/claude-code-<os>-<arch>``)."""
    package = package_dir(claude_bin)
    found = [str(package)]
    if package.parent.name.startswith("@"):
        found += sorted(str(p) for p in package.parent.glob(f"{package.name}-*") if p.is_dir())
    return found


def existing(paths: Iterable[str]) -> list[str]:
    return [p for p in paths if os.path.lexists(p)]


class Sandbox:
    """srt for this server: its path and what every session may read besides its own."""

    def __init__(self, srt_bin: str, claude_bin: str) -> None:
        self.srt_bin = srt_bin
        # The CLI by its real path: the links npm made to it (.bin/) are not visible inside.
        self.claude_bin = os.path.realpath(claude_bin)
        # srt's vendored seccomp helper runs inside the sandbox: its package must be readable.
        self.shared_reads = (
            *existing(SYSTEM_READ),
            *cli_install(claude_bin),
            str(package_dir(srt_bin)),
        )
        self.secrets = tuple(existing(SYSTEM_SECRETS))
        socat = shutil.which("socat")
        self.socat = os.path.realpath(socat) if socat and platform.system() == "Linux" else None

    def check(self) -> None:
        """Whether sessions can run sandboxed here; ``SandboxUnavailable`` says what is missing."""
        needs = _NEEDS.get(platform.system(), ())
        missing = [package for command, package in needs if not shutil.which(command)]
        if missing:
            raise SandboxUnavailable(
                f"The sandbox needs {', '.join(missing)}, missing on this machine. "
                f"{_HOW_TO_INSTALL}, {_HOW_TO_TURN_OFF}.",
                details={"missing": missing},
            )
        # srt looks for its helpers with `which` under a 1 s timeout of its own, which a
        # loaded machine overruns ("ripgrep (rg) not found" with rg right there): a failed
        # probe is asked again before the server refuses to start.
        for _ in range(PROBE_ATTEMPTS):
            failed = self._probe()
            if failed is None:
                return
        raise SandboxUnavailable(
            f"The sandbox runtime at '{self.srt_bin}' could not run a command ({failed}). "
            f"{_HOW_TO_INSTALL}, {_HOW_TO_TURN_OFF}.",
            details={"srt": self.srt_bin},
        )

    def _probe(self) -> str | None:
        """How srt failed to run ``true`` in a sandbox of the shared policy, or None."""
        with tempfile.TemporaryDirectory(prefix="aicli-srt-probe-") as scratch:
            policy = Path(scratch) / "srt-settings.json"
            write_policy(policy, _policy(self.shared_reads, (), self.secrets, ()))
            try:
                done = subprocess.run(
                    [self.srt_bin, "--settings", str(policy), "--", "true"],
                    capture_output=True,
                    text=True,
                    timeout=PROBE_TIMEOUT_S,
                    cwd=scratch,
                    # srt names its sockets in TMPDIR by its pid, which repeats across PID
                    # namespaces (nodes under ``unshare``): each probe gets a directory of its own.
                    env={**os.environ, "TMPDIR": scratch},
                )
            except (OSError, subprocess.SubprocessError) as exc:
                return str(exc)
        if done.returncode == 0:
            return None
        said = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"exited with code {done.returncode}: {' | '.join(said)}"

    def launch(
        self,
        *,
        policy_file: Path,
        workdir: str,
        session_dir: Path,
        read_paths: Sequence[str],
        network_domains: Sequence[str],
        api_port: int,
    ) -> Launch:
        """Write srt's policy for one process of a session and say how to start it.

        Everything is hidden but the system, the CLI, the workdir and the session's own
        directory; writes go to the last two; network only to aicli's API proxy on
        loopback and the domains the session was allowed.

        srt makes the unix sockets its proxy is reached through under its TMPDIR and binds
        them in before it hides ``/``, so that directory must be readable inside too: a
        short one of this process's own (a socket's path has at most 107 bytes)."""
        hold_mount_points(workdir)
        scratch = tempfile.mkdtemp(prefix="aicli-srt-")
        policy = _policy(
            (*self.shared_reads, scratch, workdir, str(session_dir), *read_paths),
            (workdir, str(session_dir)),
            self.secrets,
            (f"127.0.0.1:{api_port}", *network_domains),
        )
        if self.socat:
            policy["socatPath"] = _socat_nodelay(Path(scratch), self.socat)
        write_policy(policy_file, policy)
        # srt points NO_PROXY at loopback and TMPDIR at its own inside; ``env`` undoes both,
        # so the API proxy on loopback is reached through srt's proxy (which the policy lets
        # through) and temp files go to the session's own directory; and it drops the
        # NODE_OPTIONS meant for srt's own Node.
        launcher = [self.srt_bin, "--settings", str(policy_file), "--", "env"]
        launcher += ["-u", "NODE_OPTIONS", "NO_PROXY=", "no_proxy="]
        launcher.append(f"TMPDIR={session_dir / 'tmp'}")
        nodelay = Path(scratch) / "nodelay.cjs"
        nodelay.write_text(_NODE_NODELAY)
        env = {"TMPDIR": scratch, "NODE_OPTIONS": f"--require {nodelay}"}
        return Launch(launcher, env, scratch)


@dataclass(frozen=True)
class Launch:
    """How to start one sandboxed process: ``launcher`` goes before the CLI's argv, ``env``
    over its environment; ``scratch`` is srt's own directory, removed after the process."""

    launcher: list[str]
    env: dict[str, str]
    scratch: str

    def cleanup(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def _socat_nodelay(scratch: Path, socat: str) -> str:
    """The socat wrapper, in srt's scratch directory (readable inside: the bridges inside
    the sandbox run it too)."""
    wrapper = scratch / "socat"
    wrapper.write_text(_SOCAT_NODELAY.replace("{socat}", shlex.quote(socat)))
    wrapper.chmod(0o755)
    return str(wrapper)


def _policy(
    reads: Iterable[str], writes: Iterable[str], secrets: Iterable[str], domains: Iterable[str]
) -> dict[str, object]:
    return {
        "filesystem": {
            "denyRead": ["/", *secrets],
            "allowRead": list(dict.fromkeys(reads)),
            "allowWrite": list(dict.fromkeys(writes)),
            "denyWrite": [],
        },
        "network": {"allowedDomains": list(dict.fromkeys(domains)), "deniedDomains": []},
    }


def write_policy(path: Path, policy: dict[str, object]) -> None:
    """Written whole under a temporary name and renamed: srt never reads half a policy."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(json.dumps(policy, indent=1))
    os.replace(scratch, path)
