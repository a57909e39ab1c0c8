"""Logging for the package's command-line tools: our INFO messages, everyone else's warnings.

open_clip logs its progress (``Parsing model identifier ...``, ``Loaded built-in ... config``) with ``logging.info`` on
the *root* logger, and matplotlib announces its font cache at INFO: under a plain ``basicConfig(level=INFO)`` each
export or bag evaluation printed a dozen such lines before its own. Here the root logger stays at WARNING and only
the ``vlt_perception`` / ``vlt_training`` loggers go down to ``level``.
"""

from __future__ import annotations

import logging

FORMAT = "%(levelname)s %(name)s: %(message)s"
PROJECT_LOGGERS = ("vlt_perception", "vlt_training")


def configure_cli_logging(level: int = logging.INFO) -> None:
    """Handler on the root logger (if it has none yet) at WARNING; the project's loggers at ``level``."""
    logging.basicConfig(level=logging.WARNING, format=FORMAT)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(level)
