"""The generated API documents in ``openapi/``, kept in step with the code by a test."""

import json
from pathlib import Path
from typing import Any

import yaml

from itemrooms.api.app import create_app
from itemrooms.api.asyncapi import build_asyncapi
from itemrooms.api.settings import Settings

# Documents must not depend on the machine's settings: a fixed, dummy secret.
_SPEC_SETTINGS = Settings(jwt_secret="x" * 32, env="production")


def openapi_document() -> dict[str, Any]:
    return create_app(_SPEC_SETTINGS).openapi()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def asyncapi_document() -> dict[str, Any]:
    app = create_app(_SPEC_SETTINGS)
    return build_asyncapi(app.version, app.summary or app.title)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the Markdown descriptions) as readable ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def render_asyncapi(document: dict[str, Any]) -> str:
    # The document's own key order (asyncapi, info, servers, …) is fixed by the code
    # that builds it, and reads better than sorted keys.
    text: str = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return text


def write_specs(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    openapi = out / "openapi.json"
    openapi.write_text(render(openapi_document()))
    asyncapi = out / "asyncapi.yaml"
    asyncapi.write_text(render_asyncapi(asyncapi_document()))
    return [openapi, asyncapi]
