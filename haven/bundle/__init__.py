"""The enclave bundle: the manifest, the enclave layout, the bundle file, and building one.

- :mod:`haven.bundle.manifest` — the TOML manifest and its canonical (measured) form.
- :mod:`haven.bundle.layout` — pages, SECINFO and the measured segment directory.
- :mod:`haven.bundle.container` — the bundle file format (``read_bundle``, ``write_bundle``).
- :mod:`haven.bundle.build` — building and signing (owner side; needs the signing key).
"""
