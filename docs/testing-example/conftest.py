# Nothing to enable: installing itemrooms[testing] registers the itemrooms fixtures
# (a pytest11 entry point). This file only shows where a project's own fixtures go.
