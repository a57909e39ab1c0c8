"""Inference engines. ``create_engine`` (in ``factory``) picks and loads one; see ``base`` for the interface."""
