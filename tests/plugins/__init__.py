"""Test-local plug-ins: code a user writes outside the package, loaded by a config's `plugins` key."""
