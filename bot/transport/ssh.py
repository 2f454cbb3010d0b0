"""`hosts:`: the runbook's commands run on a host over SSH (paramiko).

What this module guarantees, and why (see FIELD-NOTES "SSH (paramiko)"):
- Host keys are pinned: only the configured known_hosts decides, nothing is ever added, and
  the negotiation is limited to the key types pinned for the host, so the key checked is
  always one that known_hosts speaks about. Unknown, changed or revoked → HostKeyRejected,
  before anything (not even the user name) is sent.
- Timeouts on both ends: connecting (TCP, banner, key exchange, authentication, opening a
  channel) is bounded by ssh.connect_timeout; a command runs on the host under
  `timeout -k 10 <secs>`, so a command that outlives ssh.command_timeout is killed there
  with its whole process group even when the client is gone; the client stops waiting a
  little after that (the host may be dead).
- Output is read as it arrives (unread output fills the channel window and paramiko's
  recv_exit_status() then waits forever), and only its tail is kept.
- No pty and stdin closed: a command that wants a password (sudo without -n) fails at once
  instead of hanging.
- paramiko blocks, so each host's work runs on that transport's own threads, never on the
  event loop nor on asyncio's default executor (the store's). One connection per host is
  opened on the first command and re-used; at most MAX_OPENING connections are being opened
  at once in the whole process (sshd's MaxStartups drops bursts of new connections).
- Uploads prefer AES-GCM (paramiko lists it last and would negotiate aes128-ctr + HMAC at
  half the speed), are checked by sha256 on the host before they are renamed into place (the
  client hashes as it reads, or not at all when the caller knows the sha256), and are skipped
  when the host already holds the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shlex
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TypeVar

import paramiko

from bot.config import Host, SshSettings
from bot.process import kill_point
from bot.transport.base import (
    Command,
    CommandResult,
    CommandTimedOut,
    ConnectFailed,
    HostKeyRejected,
    Shell,
    TransportError,
    UploadResult,
    command_line,
    log_command,
)
from bot.transport.files import sha256_file, temp_name
from bot.transport.known_hosts import PinnedKeys, pinned_keys
from bot.transport.ssh_channel import (
    KILL_AFTER_S,
    ChannelJob,
    ChannelSession,
    one_line,
    set_done,
    short,
)

log = logging.getLogger(__name__)
# paramiko logs each failed connection as a multi-line traceback at ERROR from its own thread;
# every failure here becomes one TransportError line that names the host and the fix instead.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)

T = TypeVar("T")

MAX_OPENING = 5  # connections being opened at once, process-wide (sshd MaxStartups: 10)
_opening = threading.BoundedSemaphore(MAX_OPENING)

THREADS_PER_HOST = 4  # commands at once on one host (below sshd's MaxSessions, 10)
KEEPALIVE_S = 30
GCM_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
_TIMED_OUT = (124, 137)  # `timeout`: 124 after SIGTERM, 128+9 when SIGKILL was needed


def gcm_first(ciphers: Sequence[str]) -> tuple[str, ...]:
    """The same ciphers with AES-GCM first: hosts without it still get the rest, in order."""
    preferred = tuple(c for c in GCM_CIPHERS if c in ciphers)
    return (*preferred, *(c for c in ciphers if c not in preferred))


def remote_command(command: Command, cwd: str | None, timeout_s: float) -> str:
    """The exact string sent to the host: the command under `timeout`, in `cwd`.

    `timeout` puts itself and the command in a new process group and signals the whole group,
    so whatever the command started goes too.
    """
    script = command_line(command)
    if cwd is not None:
        script = f"cd {shlex.quote(cwd)} || exit 2\n{script}"
    # `timeout 0` would mean no limit at all
    seconds = f"{max(timeout_s, 0.001):.3f}".rstrip("0").rstrip(".")
    return f"timeout -k {KILL_AFTER_S} {seconds} sh -c {shlex.quote(script)}"


class KeyFileError(ValueError):
    """ssh.key_file cannot be used; str(err) names the file, what is wrong and the fix."""


def client_key(path: Path) -> paramiko.PKey:
    """The private key in ssh.key_file, or KeyFileError saying why it cannot be used."""
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        problem = (
            f"ssh.key_file {path} does not exist (create one: ssh-keygen -t ed25519 -N '' "
            f"-f {path}, and add its .pub to the deploy user's ~/.ssh/authorized_keys on each host)"
        )
    except PermissionError:
        problem = f"ssh.key_file {path} cannot be read by the user the bot runs as"
    except paramiko.PasswordRequiredException:
        problem = f"ssh.key_file {path} is encrypted; the bot needs a key without a passphrase"
    except (OSError, paramiko.SSHException, ValueError) as exc:
        problem = f"ssh.key_file {path} is not a usable private key ({one_line(exc)})"
    raise KeyFileError(problem)


def keyscan_command(host: Host, known_hosts: Path) -> str:
    """The command that pins a host's keys in known_hosts (after checking them out of band)."""
    port = "" if host.port == 22 else f"-p {host.port} "
    return f"ssh-keyscan {port}{host.hostname} >> {known_hosts}"


class SshTransport:
    """One host over SSH. Connects on first use; `close()` when done (open_transports does)."""

    def __init__(
        self,
        host: Host,
        settings: SshSettings,
        *,
        ciphers: Callable[[Sequence[str]], Sequence[str]] = gcm_first,
    ) -> None:
        """`ciphers` reorders paramiko's cipher list (the upload benchmark compares orders)."""
        self.host = host
        self.settings = settings
        self._ciphers = ciphers
        self._connect_timeout = settings.connect_timeout.total_seconds()
        self._executor = ThreadPoolExecutor(
            max_workers=THREADS_PER_HOST, thread_name_prefix=f"ssh {host}"
        )
        self._opening = threading.Lock()  # held while connecting: one connection per host
        self._state = threading.Lock()  # guards _client and _closed; never held during I/O
        self._client: paramiko.Transport | None = None
        self._closed = False

    @property
    def target(self) -> str:
        return str(self.host)

    def __repr__(self) -> str:
        return f"SshTransport({self.target})"

    @property
    def cipher(self) -> str | None:
        """The cipher negotiated with the host, once connected."""
        client = self._client
        return client.local_cipher if client is not None else None

    @property
    def host_key_type(self) -> str | None:
        """The host key algorithm negotiated (and checked against known_hosts), once connected."""
        client = self._client
        return client.host_key_type if client is not None else None

    # --- the contract ---------------------------------------------------------------------

    async def run(
        self,
        command: Command,
        *,
        cwd: str | None = None,
        timeout_s: float | None = None,
        stdin: bytes | None = None,
    ) -> CommandResult:
        log_command(self.target, command, cwd)
        timeout = self.settings.command_timeout.total_seconds() if timeout_s is None else timeout_s
        job = ChannelJob()
        return await self._in_thread(job, self._run, job, command, cwd, timeout, stdin)

    async def upload(
        self, local_path: Path, remote_path: str, *, sha256: str | None = None
    ) -> UploadResult:
        """Copy to `remote_path` (its directory is created), verified, or skip if already there."""
        job = ChannelJob()
        return await self._in_thread(job, self._upload, job, Path(local_path), remote_path, sha256)

    async def close(self) -> None:
        with self._state:
            self._closed = True
            client, self._client = self._client, None
        self._executor.shutdown(wait=False, cancel_futures=True)
        if client is not None:
            # Closing joins paramiko's reader thread (it ends as soon as its socket closes):
            # brief, but not for the event loop, nor queued behind this host's busy threads or
            # asyncio's default executor (the store's): a thread of its own.
            loop = asyncio.get_running_loop()
            closed: asyncio.Future[None] = loop.create_future()

            def close_client() -> None:
                try:
                    client.close()
                finally:
                    loop.call_soon_threadsafe(set_done, closed)

            threading.Thread(target=close_client, name=f"ssh close {self.host}").start()
            await closed

    # --- threads --------------------------------------------------------------------------

    async def _in_thread(self, job: ChannelJob, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, function, *args)
        except RuntimeError:  # the executor is shut down
            raise TransportError(self.target, "this connection is closed") from None
        try:
            return await future
        except asyncio.CancelledError:
            # The thread is not interruptible; closing its channel ends its wait at once.
            job.abandon()
            raise

    def _connection(self) -> paramiko.Transport:
        with self._opening:
            with self._state:
                if self._closed:
                    raise TransportError(self.target, "this connection is closed")
                if self._client is not None and self._client.is_active():
                    return self._client
            client = self._open()
            with self._state:
                closed_meanwhile = self._closed
                if not closed_meanwhile:
                    self._client = client
            if closed_meanwhile:
                client.close()
                raise TransportError(self.target, "this connection is closed")
            return client

    def _open(self) -> paramiko.Transport:
        key = self._client_key()
        pinned = self._pinned()
        with _opening:
            sock = self._socket()
            client = paramiko.Transport(sock)
            try:
                self._handshake(client, pinned)
                self._authenticate(client, key)
            except BaseException:
                client.close()
                raise
        client.set_keepalive(KEEPALIVE_S)
        log.debug("%s: connected (%s, host key %s)", self.target, client.local_cipher,
                  client.host_key_type)  # fmt: skip
        return client

    def _client_key(self) -> paramiko.PKey:
        try:
            return client_key(self.settings.key_file)
        except KeyFileError as exc:
            raise ConnectFailed(self.target, str(exc), setup="ssh.key_file") from None

    def _pinned(self) -> PinnedKeys:
        try:
            return pinned_keys(self.settings.known_hosts, self.host.hostname, self.host.port)
        except OSError as exc:
            raise HostKeyRejected(
                self.target,
                f"cannot read ssh.known_hosts {self.settings.known_hosts}: {exc.strerror}",
                setup="ssh.known_hosts",
            ) from None

    def _socket(self) -> socket.socket:
        address = f"{self.host.hostname}:{self.host.port}"
        try:
            sock = socket.create_connection(
                (self.host.hostname, self.host.port), timeout=self._connect_timeout
            )
        except socket.gaierror as exc:
            raise ConnectFailed(
                self.target,
                f"cannot resolve {self.host.hostname} ({exc.strerror})",
                setup="hosts",
            ) from None
        except ConnectionRefusedError:
            raise ConnectFailed(
                self.target, f"connection refused at {address} (is sshd running on that port?)"
            ) from None
        except TimeoutError:
            raise ConnectFailed(
                self.target,
                f"no answer from {address} within {self._connect_timeout:g}s "
                "(host down, or a firewall drops the connection)",
            ) from None
        except OSError as exc:
            raise ConnectFailed(
                self.target, f"cannot reach {address}: {exc.strerror or exc}"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _handshake(self, client: paramiko.Transport, pinned: PinnedKeys) -> None:
        client.banner_timeout = client.handshake_timeout = self._connect_timeout
        client.auth_timeout = client.channel_timeout = self._connect_timeout
        options = client.get_security_options()
        options.ciphers = tuple(self._ciphers(options.ciphers))
        pinned_algorithms = pinned.algorithms(options.key_types)
        if pinned_algorithms:
            options.key_types = pinned_algorithms
        try:
            client.start_client(timeout=self._connect_timeout)
        except paramiko.IncompatiblePeer as exc:
            if "host key" in str(exc):
                types = ", ".join(sorted(pinned.key_types()))
                raise HostKeyRejected(
                    self.target,
                    f"known_hosts {pinned.path} pins only {types} for {pinned.name} and the "
                    f"host offers none of those; {self._keyscan_hint(pinned)}",
                ) from None
            raise ConnectFailed(self.target, f"no common SSH algorithms: {exc}") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectFailed(self.target, self._handshake_problem(exc)) from None
        if not client.initial_kex_done:
            if not client.remote_version:
                raise ConnectFailed(self.target, self._handshake_problem(EOFError("no banner")))
            raise ConnectFailed(
                self.target, f"SSH handshake did not finish within {self._connect_timeout:g}s"
            )
        self._check_host_key(client.get_remote_server_key(), pinned)

    def _handshake_problem(self, exc: BaseException) -> str:
        text = one_line(exc)
        if "banner" in text.lower():
            return (
                f"no SSH banner from {self.host.hostname}:{self.host.port} within "
                f"{self._connect_timeout:g}s (not an SSH port, or sshd refused the connection: "
                "too many at once, see MaxStartups)"
            )
        return f"SSH handshake failed: {text or type(exc).__name__}"

    def _check_host_key(self, key: paramiko.PKey, pinned: PinnedKeys) -> None:
        offered = f"{key.get_name()} {key.fingerprint}"
        if pinned.accepts(key):
            return
        if pinned.is_revoked(key):
            problem = (
                f"the host offered {offered}, which known_hosts {pinned.path} marks @revoked; "
                "refusing it"
            )
        elif not pinned.keys:
            where = "" if pinned.file_exists else " (the file does not exist)"
            problem = (
                f"host key not in known_hosts {pinned.path}{where}; it offered {offered}. "
                f"{self._keyscan_hint(pinned)}"
            )
            # A setup problem: named once in the alerts channel, not logged on every try.
            log.debug("%s: %s", self.target, problem)
            raise HostKeyRejected(self.target, problem, setup="ssh.known_hosts")
        else:
            pinned_prints = ", ".join(
                f"{k.get_name()} {k.fingerprint}"
                for k in pinned.keys
                if k.get_name() == key.get_name()
            )
            problem = (
                f"HOST KEY CHANGED: it offered {offered}, known_hosts {pinned.path} pins "
                f"{pinned_prints} (someone may be intercepting the connection, or the host was "
                "reinstalled). If the change is expected: "
                f"ssh-keygen -R {shlex.quote(pinned.name)} -f {pinned.path}, then "
                f"{self._keyscan_hint(pinned, lead=False)}"
            )
        log.error("%s: %s", self.target, problem)
        raise HostKeyRejected(self.target, problem)

    def _keyscan_hint(self, pinned: PinnedKeys, *, lead: bool = True) -> str:
        scan = keyscan_command(self.host, pinned.path)
        check = "after verifying the fingerprint with the host's owner"
        return f"To trust it, {check}: {scan}" if lead else f"{check}: {scan}"

    def _authenticate(self, client: paramiko.Transport, key: paramiko.PKey) -> None:
        try:
            client.auth_publickey(self.host.user, key)
        except paramiko.AuthenticationException:
            raise ConnectFailed(
                self.target,
                f"authentication failed for user {self.host.user} with ssh.key_file "
                f"{self.settings.key_file} ({key.get_name()} {key.fingerprint}): is its public "
                f"key in ~{self.host.user}/.ssh/authorized_keys on the host?",
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectFailed(
                self.target, f"authentication did not complete: {one_line(exc)}"
            ) from None

    # --- commands -------------------------------------------------------------------------

    def _run(
        self,
        job: ChannelJob,
        command: Command,
        cwd: str | None,
        timeout_s: float,
        stdin: bytes | None,
    ) -> CommandResult:
        shown = command_line(command)
        session = self._start(job, remote_command(command, cwd, timeout_s), shown, timeout_s)
        started = time.monotonic()  # the command's time, not the connection's
        with session:
            if stdin:
                session.feed(stdin)
            status = session.finish()
        duration = time.monotonic() - started
        if status in _TIMED_OUT and duration >= timeout_s:
            log.info("%s: timed out after %gs: %s", self.target, timeout_s, shown)
            raise CommandTimedOut(
                self.target,
                f"`{short(shown)}` ran longer than {timeout_s:g}s and was stopped on the host",
            )
        log.debug("%s: exit %d in %.2fs: %s", self.target, status, duration, shown)
        return CommandResult(
            self.target, shown, status, session.stdout.text(), session.stderr.text(), duration
        )

    def _start(self, job: ChannelJob, remote: str, shown: str, timeout_s: float) -> ChannelSession:
        """A channel running `remote` (already wrapped in `timeout`), its stdin still open."""
        connection = self._connection()
        try:
            channel = connection.open_session(timeout=self._connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TransportError(
                self.target, f"cannot open an SSH session: {one_line(exc) or 'refused'}"
            ) from None
        job.attach(channel)
        session = ChannelSession(self.target, channel, job, shown, timeout_s)
        try:
            channel.exec_command(remote)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            channel.close()
            raise session.lost(exc) from None
        return session

    # --- upload ---------------------------------------------------------------------------

    def _upload(
        self, job: ChannelJob, local: Path, remote: str, sha256: str | None
    ) -> UploadResult:
        """Stream the file into a temporary name, check its sha256 on the host; rename it.

        One command on the host takes exactly `size` bytes into a temporary name from the
        first byte, while it says on the side what the destination already holds: `have -`,
        or the sha256 of a file of the same size. When that is this file, the client stops
        sending (a small file may be all sent by then) and the host drops what it got.
        Otherwise the host prints the sha256 and size of what it wrote and waits for one word:
        `commit` (chmod, then mv into place). Anything else, or nothing because the client
        failed, was cancelled or is gone, removes the temporary file. So a failed upload never
        replaces the destination nor leaves a stray file.

        Why this shape (profiled phase by phase on a 2-core machine, benchmarks/README.md):
        - The bytes go at once, without waiting for the host's answer: waiting for the shell
          to start and say what it holds cost 0.1–0.25 s of a 0.7 s upload of 200 MB.
        - `sha256`, when the caller knows it (a deploy's package), is what the host's copy
          must hash to: the client then reads the file only to send it. Otherwise the client
          hashes each chunk on the thread that reads ahead of the encryption.
        - The host writes with `dd` in 1 MiB blocks and hashes the written file with OpenSSL
          from the page cache (0.13 s for 200 MB) rather than through `head | tee | openssl`
          as the bytes arrive: three processes copying 8 KiB at a time through two pipes
          cost the host a quarter more CPU (1.54 against 1.17 CPU-s), CPU the client needs.
        """
        started = time.monotonic()
        try:
            size, mode = _size_and_mode(local)
        except OSError as exc:
            raise TransportError(self.target, f"cannot read {local}: {exc.strerror}") from None
        timeout_s = self.settings.command_timeout.total_seconds()
        command = remote_command(Shell(receiver_script(remote, size, mode)), None, timeout_s)
        with self._start(job, command, f"receive {remote}", timeout_s) as receiver:
            streamed = self._stream(receiver, local, sha256)
            have = streamed.have or receiver.read_line()
            if have is None or not have.startswith("have "):
                receiver.finish()
                problem = one_line(receiver.stderr.text()) or "no answer"
                raise TransportError(self.target, f"cannot prepare {remote}: {problem}")
            digest = streamed.sha256
            if have == f"have {digest}":
                # The host holds this very file: it drops what it got (all of a small file,
                # sent before the answer came) at the end of the stream; nothing is replaced.
                receiver.finish()
                duration = time.monotonic() - started
                log.debug("%s: %s already held (%.2fs)", self.target, remote, duration)
                return UploadResult(self.target, remote, size, digest, True, duration)
            got = receiver.read_line()
            if got != f"got {digest} {size}":
                receiver.feed(b"drop\n")
                receiver.finish()
                seen = one_line(receiver.stderr.text()) or one_line(got or "") or "no answer"
                # The host wrote the whole file and it hashes otherwise: the file changed.
                changed = sha256 is not None and got is not None and got.endswith(f" {size}")
                what = "it changed since its sha256 was taken; " if changed else ""
                raise TransportError(
                    self.target,
                    f"upload of {local} to {remote} failed verification on the host (expected "
                    f"sha256 {digest} and {size} bytes; the host says: {seen}); {what}"
                    "nothing was replaced",
                )
            kill_point("upload:sent")
            receiver.feed(b"commit\n")
            if receiver.finish() != 0:
                raise TransportError(
                    self.target,
                    f"cannot move the upload into {remote}: "
                    f"{one_line(receiver.stderr.text()) or 'failed'}",
                )
        duration = time.monotonic() - started
        log.debug("%s: uploaded %s to %s (%d bytes, %.2fs)", self.target, local, remote, size,
                  duration)  # fmt: skip
        return UploadResult(self.target, remote, size, digest, False, duration)

    def _stream(self, receiver: ChannelSession, local: Path, known: str | None) -> _Streamed:
        """Send the file, unless the host's first line says it already holds it."""
        digest = None if known is not None else hashlib.sha256()
        have = None
        try:
            with local.open("rb") as file, contextlib.closing(_chunks(file, digest)) as chunks:
                for chunk in chunks:
                    if not receiver.feed(chunk):
                        break  # the host stopped taking it: its answer says why
                    if have is None and (have := receiver.ready_line()) not in (None, "have -"):
                        # A file of the same size is there: hashed here only in that case.
                        sha256 = known or self._read(sha256_file, local)
                        if have == f"have {sha256}":
                            return _Streamed(have, sha256)  # nothing more to send
        except OSError as exc:
            receiver.close_quietly()  # the stream ends short: the host removes what it got
            raise TransportError(self.target, f"cannot read {local}: {exc.strerror}") from None
        if digest is not None:
            return _Streamed(have, digest.hexdigest())
        assert known is not None
        return _Streamed(have, known)

    def _read(self, hashing: Callable[[Path], str], local: Path) -> str:
        try:
            return hashing(local)
        except OSError as exc:
            raise TransportError(self.target, f"cannot read {local}: {exc.strerror}") from None


def receiver_script(remote: str, size: int, mode: int) -> str:
    """The host's side of an upload of `size` bytes to `remote` (see SshTransport._upload)."""
    return _RECEIVE.format(
        dir=shlex.quote(str(PurePosixPath(remote).parent)),
        dest=shlex.quote(remote),
        tmp=shlex.quote(temp_name(remote)),
        size=size,
        mode=format(mode, "o"),
        hash_dest=_hash('"$dest"'),
        hash_tmp=_hash('"$tmp"'),
    )


# The receiver: exactly {size} bytes of the file from the first byte, while a background job
# says what the destination holds (when its size matches); then their sha256 and the verdict.
# GNU dd (count_bytes) or else `head -c` reads no further than it must and `read` takes the
# word byte by byte, so the stream and the word after it stay whole. The temporary file goes
# on any way out but the commit (a signal: the timeout, a hang-up; a stream cut short).
_RECEIVE = """\
dir={dir} dest={dest} tmp={tmp}
[ -d "$dir" ] || mkdir -p "$dir" || exit 1
trap 'rm -f "$tmp"' EXIT
trap 'exit 1' HUP INT PIPE TERM
if [ -f "$dest" ] && [ "$(wc -c < "$dest")" -eq {size} ]; then
  (set -- $({hash_dest}); echo "have $1") < /dev/null &
else
  echo "have -"
fi
if dd --version >/dev/null 2>&1; then
  dd bs=1M iflag=fullblock,count_bytes count={size} of="$tmp" status=none || exit 1
else
  head -c {size} > "$tmp" || exit 1
fi
wait
set -- $({hash_tmp})
echo "got $1 $(wc -c < "$tmp")"
IFS= read -r verdict || exit 1
[ "$verdict" = commit ] || exit 1
chmod {mode} "$tmp" && mv -f "$tmp" "$dest" || exit 1
trap - EXIT
"""

_STREAM_CHUNK = 256 * 1024


def _chunks(file: BinaryIO, digest: Any) -> Iterator[bytes]:
    """The file's chunks in order, each added to `digest` (a hashlib object) unless it is None.

    Hashing, a thread reads and hashes the next chunk while the caller encrypts and sends the
    last (file reads, hashlib and the cipher release the GIL): one chunk ahead at most, so
    memory stays flat. Not hashing, the reads are inline: a page-cache read of 256 KiB is
    cheaper than handing it between threads (0.26 against 0.34 client CPU-s for 200 MB).
    """
    if digest is None:
        while chunk := file.read(_STREAM_CHUNK):
            yield chunk
        return

    def read() -> bytes:
        chunk = file.read(_STREAM_CHUNK)
        digest.update(chunk)
        return chunk

    with ThreadPoolExecutor(1, thread_name_prefix="ssh-upload-read") as reader:
        ahead = reader.submit(read)
        while chunk := ahead.result():
            ahead = reader.submit(read)
            yield chunk


@dataclass(frozen=True)
class _Streamed:
    """How a stream ended: the host's first line if it came by then, and the file's sha256."""

    have: str | None
    sha256: str


def _hash(quoted_path: str) -> str:
    """Shell printing the sha256 of a file on the host, as the first word of its output.

    OpenSSL uses the CPU's SHA extensions (about 1.5 GB/s here) where coreutils' sha256sum
    does not (about 145 MB/s: longer than the transfer itself on a fast link); sha256sum
    where there is no openssl. Reading stdin keeps a path starting with '-' from being an option.
    """
    return (
        f"if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r < {quoted_path}; "
        f"else sha256sum < {quoted_path}; fi"
    )


def _size_and_mode(path: Path) -> tuple[int, int]:
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise IsADirectoryError(21, "not a regular file", str(path))
    return info.st_size, stat.S_IMODE(info.st_mode)


__all__ = [
    "MAX_OPENING",
    "KeyFileError",
    "SshTransport",
    "client_key",
    "gcm_first",
    "keyscan_command",
    "receiver_script",
    "remote_command",
]
