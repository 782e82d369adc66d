"""``python -m mlcloud.modelbuild build`` — the same commands as ``mlcloud models``."""

from mlcloud.modelbuild.cli import models

if __name__ == "__main__":
    models(prog_name="mlcloud models")
