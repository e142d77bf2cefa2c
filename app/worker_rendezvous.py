"""Before TensorFlow's multi-worker start-up: wait, in Python, until every other task of TF_CONFIG answers.

Why: MultiWorkerMirroredStrategy's constructor waits for every task inside TensorFlow, holding Python's
lock, with no time limit metatune can set (the coordination service's cluster_register_timeout_in_ms of
5 s did not end it within 150 s). A worker whose peer was never started, or whose TF_CONFIG names an
address that reaches no peer, waited there forever: silent, deaf to Ctrl-C and SIGTERM (no signal handler
runs while TensorFlow holds the lock), stopped only by kill -9. So each task first listens on its own port,
which tells the others it has started, and connects to each other task's port until all of them answer:
in Python, where Ctrl-C works, with a line saying whom it waits for, and a time limit
(METATUNE_WORKERS_WAIT_S) that ends in one ERROR line. TensorFlow's own wait that follows is then short.

The listener never accepts: the kernel completes a peer's connection, which is all the peer needs to know,
and closing the listener drops it. It is closed before TensorFlow's server takes the port; a peer that
connects in between is refused and tries again, as a peer that starts late is.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from app.errors import UserError

logger = logging.getLogger(__name__)
WAIT_ENV = "METATUNE_WORKERS_WAIT_S"
# Workers of one job are started by hand or by a scheduler, seconds to minutes apart (a container image
# pulled on one machine and not the other): long enough for that, short of "forever".
DEFAULT_WAIT_S = 900
RETRY_S = 0.5
CONNECT_TIMEOUT_S = 2.0
PROGRESS_EVERY_S = 30.0


def wait_limit(environ) -> float:
    """METATUNE_WORKERS_WAIT_S: seconds a task waits for the others to start (DEFAULT_WAIT_S when unset)."""
    text = (environ.get(WAIT_ENV) or "").strip()
    if not text:
        return DEFAULT_WAIT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 7 * 24 * 3600:  # NaN too
        raise UserError(f"{WAIT_ENV} must be a number of seconds above 0 (at most a week): how long a worker waits "
                        f"for the other tasks of TF_CONFIG to start. Received: {WAIT_ENV}={environ.get(WAIT_ENV)!r}. "
                        f"Unset it for {DEFAULT_WAIT_S} s.")
    return value


def listen(port: int) -> socket.socket:
    """A socket listening on `port` of every address of this machine, as TensorFlow's server will (IPv4 and
    IPv6 where the system has both). OSError when the port is taken or not allowed."""
    if socket.has_dualstack_ipv6():
        return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=128)
    return socket.create_server(("", port), backlog=128)


def _answers(address: str) -> str | None:
    """None when something listens at `address` (host:port), else why not ("Connection refused", ...)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            return None
    except socket.timeout:
        return "no answer (timed out)"
    except OSError as error:  # refused, unreachable, a host name that does not resolve
        return error.strerror or str(error)


def wait_for_tasks(own_port: int, others: dict[str, str], limit_s: float) -> None:
    """Listen on `own_port` and wait until every task of `others` ({"worker 1": "host:port"}) answers, at most
    `limit_s` seconds (UserError after). OSError when `own_port` cannot be listened on."""
    if not others:
        return
    with listen(own_port):
        started = time.monotonic()
        waiting, reasons = dict(others), {}
        next_note = started
        while True:
            for name, address in list(waiting.items()):
                reason = _answers(address)
                if reason is None:
                    del waiting[name]
                else:
                    reasons[name] = reason
            if not waiting:
                break
            elapsed = time.monotonic() - started
            pending = "; ".join(f"{name} at {waiting[name]} ({reasons[name]})" for name in waiting)
            if elapsed >= limit_s:
                raise UserError(
                    f"--distribute multi-worker: {len(waiting)} of the {len(others)} other task(s) of TF_CONFIG did "
                    f"not start within {limit_s:g} s: {pending}. Start every worker with the same command and its "
                    f"own TF_CONFIG (each with its own task index), check that each address reaches its machine, or "
                    f"give them longer ({WAIT_ENV}=SECONDS). Nothing was written.")
            if time.monotonic() >= next_note:
                logger.info("--distribute multi-worker: waiting for %s to start (%.0f s of at most %g s; Ctrl-C "
                            "stops this worker).", pending, elapsed, limit_s)
                next_note = time.monotonic() + PROGRESS_EVERY_S
            time.sleep(RETRY_S)
    logger.info("--distribute multi-worker: every task of TF_CONFIG answers (%d other(s)); starting TensorFlow's "
                "cluster (process %d).", len(others), os.getpid())
