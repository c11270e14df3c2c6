"""``python -m swirl_lightning ...`` is the ``swirl`` command (for environments without its console script)."""

from swirl_lightning.cli import entry

if __name__ == "__main__":
    entry()
