"""Command-line entry points: ``train``, ``evaluate``, ``export``, ``generate``, ``demo``.

Each module has ``main(argv=None) -> int`` and runs with ``python -m vlt_training.cli.<name>``.
"""
