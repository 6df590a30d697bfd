"""The uvicorn internals that api/ws_protocol.py and api/http_protocol.py extend,
checked at import: an unsupported uvicorn fails at once, in one line that names the
supported range, instead of a KeyError at startup or an AttributeError in the middle of
a kick (what uvicorn 0.35 and 0.50 did)."""

from collections.abc import Iterable

import uvicorn

# What pyproject.toml declares (tests/packaging/test_declared_ranges.py keeps them equal).
UVICORN_RANGE = ">=0.54.0,<0.55"


def missing_internals(
    protocol: type, methods: Iterable[str], attributes: Iterable[str]
) -> list[str]:
    """What ``protocol`` lacks; attributes count when its code assigns or reads them
    (they exist only on instances, made per connection)."""
    names: set[str] = set()
    for klass in protocol.__mro__:
        for value in vars(klass).values():
            code = getattr(value, "__code__", None)
            if code is not None:
                names.update(code.co_names)
    missing = [name for name in methods if not callable(getattr(protocol, name, None))]
    return missing + [name for name in attributes if name not in names]


def unsupported_uvicorn(detail: str) -> ImportError:
    return ImportError(
        f"itemrooms needs uvicorn{UVICORN_RANGE} (installed: {uvicorn.__version__}): "
        f"{detail}; install a supported uvicorn, e.g. pip install 'uvicorn{UVICORN_RANGE}'"
    )


def require_internals(
    base: type, what: str, methods: Iterable[str], attributes: Iterable[str]
) -> None:
    if missing := missing_internals(base, methods, attributes):
        raise unsupported_uvicorn(f"its {what} implementation lacks " + ", ".join(missing))
