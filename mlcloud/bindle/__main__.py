"""``python -m mlcloud.bindle …``: the ``bindle`` CLI group without the rest of mlcloud."""

from mlcloud.bindle.cli import bindle

if __name__ == "__main__":
    bindle(prog_name="python -m mlcloud.bindle")
