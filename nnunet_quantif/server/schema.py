"""The server's OpenAPI document: ``python3 -m nnunet_quantif.server.schema > docs/api.json``."""

from __future__ import annotations

import json
import sys


def schema_text() -> str:
    """The OpenAPI document of :func:`~nnunet_quantif.server.app.create_app`, as indented JSON (ends with a
    newline)."""
    from .app import create_app

    return json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    sys.stdout.write(schema_text())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
