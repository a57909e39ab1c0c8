"""``run_node``: the one start-up and shutdown sequence of every node executable of the package.

    def main(args=None) -> int:
        return run_node("evaluator_node", EvaluatorNode, args, doc=__doc__, table=EVALUATOR)

What it does, in order:

1. ``--help`` prints the node's description and parameters and exits 0 (no ROS needed);
2. every ``--params-file`` must exist and parse (one clear line naming the file, exit 1; ``rclpy.init`` would
   raise an ``RCLError`` traceback);
3. SIGINT / SIGTERM handlers go in before ``rclpy.init`` (see :mod:`.signals`), then ``rclpy.init``;
4. the node is built (bad parameters: one line naming the parameter and the file, exit 1), then
   ``node.serve(signals)`` runs it (default: spin until shutdown) and returns the exit code;
5. whatever ended it (a signal, the node's own end, an error), ``node.before_exit(code)`` cleans up and may change
   the exit code, the node logs ``shut down (<why>), exit code N``, and rclpy shuts down;
6. from then on SIGINT / SIGTERM are ignored: any number of signals at any moment, also while the interpreter
   exits, end in the same clean exit.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
import rclpy.logging
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from vlt_perception.launch_config import ConfigError, parameter_help
from vlt_perception.nodes import cli_help, parameters, signals


class StartupError(RuntimeError):
    """The node cannot start (its message is the one line the user sees); exit code 1."""


def spin_until_shutdown(node) -> int:
    """The default ``serve``: run the node's callbacks until SIGINT / SIGTERM shut the context down."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    finally:
        executor.shutdown(timeout_sec=1.0)
    return 0


def _one_line(executable: str, exc: BaseException, with_type: bool = False) -> None:
    text = f"{type(exc).__name__}: {exc}" if with_type else str(exc)
    print(f"{executable}: {text}", file=sys.stderr, flush=True)


def run_node(executable: str, make_node: Callable[[], Any], args: Sequence[str] | None = None, *,
             doc: str | None = None, table: str | None = None, expected: tuple[type[BaseException], ...] = (),
             raise_first: bool = False) -> int:
    """Run the node ``make_node()`` until it ends or a signal stops it; returns the process exit code.

    ``table``: the key of its parameter table (for ``--help``). ``expected``: exception types that mean bad input
    (printed as one line, exit 1) besides :class:`ConfigError` and :class:`StartupError`. ``raise_first``: the
    first signal raises ``KeyboardInterrupt`` in the main thread (for a node whose ``serve`` blocks in its own
    loop, not in an executor). The node may define ``serve(signals) -> int`` and ``before_exit(code) -> int``.
    """
    if cli_help.maybe_print_help(executable, doc, parameter_help(table) if table else [], args):
        return 0
    argv = list(sys.argv if args is None else args)
    try:
        parameters.check_params_files(argv)
    except ConfigError as exc:
        _one_line(executable, exc)
        return 1
    parameters.set_command_line(argv)
    stop = signals.install(raise_first)  # before rclpy.init, so that rclpy's handler chains to it
    node, code, why = None, 0, "done"
    try:
        try:
            rclpy.init(args=args)
        except Exception as exc:  # noqa: BLE001 - RCLError for arguments rcl rejects: one line, not a traceback
            _one_line(executable, exc)
            return 1
        node = make_node()
        if not stop.requested.is_set():
            serve = getattr(node, "serve", None)
            code = serve(stop) if serve is not None else spin_until_shutdown(node)
            why = "done" if code == 0 else "failed"
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ConfigError, StartupError, *expected) as exc:
        _one_line(executable, exc)
        code, why = 1, "start-up failed" if node is None else "error"
    except Exception as exc:
        if stop.requested.is_set() and not rclpy.ok():
            # SIGINT/SIGTERM shut the context down while the executor was waiting; rclpy then sometimes raises
            # RCLError ("context is not valid") instead of ExternalShutdownException: still a normal exit.
            pass
        elif type(exc).__module__.startswith("rclpy"):  # e.g. a parameter value rclpy refuses at declare time
            _one_line(executable, exc, with_type=True)
            code, why = 1, "start-up failed" if node is None else "error"
        else:
            raise
    finally:
        stop.closing()
        if stop.requested.is_set():
            why = stop.name() or why
        if node is not None:
            before_exit = getattr(node, "before_exit", None)
            if before_exit is not None:
                code = before_exit(code)
            logger = node.get_logger().name
            node.destroy_node()
        rclpy.try_shutdown()
        if node is not None:
            # To the console only, under a logger name /rosout does not know: the node's own logger would publish
            # to /rosout, whose context a signal has already shut down ("Failed to publish log message").
            rclpy.logging.get_logger(f"{logger}.exit").info(f"shut down ({why}), exit code {code}")
        stop.ignore()
        sys.stdout.flush()
        sys.stderr.flush()
    return code
