"""SIGINT / SIGTERM handling that lets a node shut down cleanly however many signals arrive.

rclpy's own handler (installed by ``rclpy.init``) shuts the context down, which wakes the executor, and then
calls the handler that was installed before it. With Python's default that is ``KeyboardInterrupt`` for SIGINT
and process death for SIGTERM, raised wherever the main thread happens to be: a second Ctrl-C, or ``ros2
launch`` signalling the nodes on top of the process group's own SIGINT, used to land inside ``node.close()`` and
end the process with a traceback and exit code -2.

:func:`install` puts a Python handler in place *before* ``rclpy.init`` (so rclpy chains to it) that only counts
the signal: shutting down is left to rclpy's context shutdown on the first one, and every later one is a no-op.
Shutdown time stays bounded by the node's own cleanup (worker join timeouts), not by signals.

When the node has shut down, :meth:`ShutdownSignals.ignore` sets both signals to ``SIG_IGN`` for the rest of the
process. Python's finalisation puts ``SIG_DFL`` back for every signal that has a Python handler (it leaves ignored
ones alone), so a signal landing while the interpreter exits, for example ``ros2 launch``'s own SIGINT 50 ms after
the group's, would otherwise kill the process with exit code -2 and no shutdown log.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ShutdownSignals:
    """Counts SIGINT / SIGTERM; ``requested`` is set by the first one.

    ``raise_first``: the first signal also raises ``KeyboardInterrupt`` in the main thread (for a main thread
    that blocks in its own loop rather than in an executor, e.g. the bag player), unless :meth:`closing` was
    already called. Later signals never raise.
    """

    def __init__(self, raise_first: bool = False) -> None:
        self.raise_first = raise_first
        self.count = 0
        self.first = 0  # the first signal's number
        self.requested = threading.Event()
        self._closing = False

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.count += 1
        self.first = self.first or signum
        self.requested.set()
        if self.raise_first and self.count == 1 and not self._closing:
            raise KeyboardInterrupt

    def closing(self) -> None:
        """Shutdown has begun: from now on no signal raises (call first thing in the ``finally`` block)."""
        self._closing = True

    def install(self) -> "ShutdownSignals":
        """Install for SIGINT and SIGTERM (main thread only, as Python requires). Returns self."""
        for sig in SIGNALS:
            signal.signal(sig, self._handle)
        return self

    def reinstall(self) -> None:
        """Put the counting handler back at the OS level (``rclpy.try_shutdown`` restores the handlers it saved,
        which for SIGTERM can be the OS default that kills the process)."""
        self.install()

    def ignore(self) -> None:
        """The process is about to exit: ignore SIGINT / SIGTERM from now on (see the module docstring). Only for
        a process's entry point: the handlers are not put back."""
        self._closing = True
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def name(self) -> str:
        """The signal that asked for shutdown ('' when none did)."""
        return signal.Signals(self.first).name if self.first else ""


def install(raise_first: bool = False) -> ShutdownSignals:
    """A :class:`ShutdownSignals` installed for this process (call before ``rclpy.init``)."""
    return ShutdownSignals(raise_first).install()
