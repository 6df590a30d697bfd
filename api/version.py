"""The installed distribution's version, one place for --version, the app and logs."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("itemrooms")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"
