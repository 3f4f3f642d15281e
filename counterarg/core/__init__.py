"""The bottom layer: crash-safe files and folders (io), paths as outputs show them (paths), config values
coerced to their field types (fieldvalues). Imports nothing of the package; every other layer may use it."""
