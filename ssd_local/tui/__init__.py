"""The Textual interface: ``ssd-local`` (no arguments) or ``ssd-local tui``. It renders
the core's events and never computes results itself; the core never imports it."""

from __future__ import annotations


def main() -> int:
    from .app import create_app

    create_app().run()
    return 0
