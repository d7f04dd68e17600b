"""Print the service's OpenAPI 3.1 document (``python -m capsim.service.openapi``); the copy in
``docs/openapi.json`` is checked against it by the tests."""

from __future__ import annotations

import json
import sys


def main() -> None:
    """Write the document, sorted and indented, to stdout."""
    from capsim.service.app import create_app

    sys.stdout.write(json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
