"""The generated API documents in ``openapi/``, kept in step with the code by a test."""

import json
from pathlib import Path
from typing import Any

from api.app import create_app
from api.settings import Settings

# Documents must not depend on the machine's settings: a fixed, dummy secret.
_SPEC_SETTINGS = Settings(jwt_secret="x" * 32, env="production")


def openapi_document() -> dict[str, Any]:
    return create_app(_SPEC_SETTINGS).openapi()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def write_specs(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "openapi.json"
    path.write_text(render(openapi_document()))
    return [path]
