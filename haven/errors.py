"""Errors a user or a hostile input can cause.

Every one of them carries a message fit for the console: the CLI prints it on one line and exits
non-zero. None of them may carry secret material.
"""

from __future__ import annotations


class HavenError(Exception):
    """Base of all errors Haven reports to its user."""

    exit_code = 1


class FormatError(HavenError):
    """A binary structure, file or encoding does not parse."""


class ManifestError(HavenError):
    """The application manifest is invalid."""


class BundleError(HavenError):
    """An enclave bundle is malformed."""


class KeyFileError(HavenError):
    """A key file is missing, unreadable or of the wrong kind."""


class EnclaveInitError(HavenError):
    """EINIT refused to initialise an enclave."""


class KeyRequestError(HavenError):
    """EGETKEY refused a key request."""


class ReportError(HavenError):
    """A REPORT failed local attestation (bad MAC or wrong target)."""


class SealError(HavenError):
    """A sealed blob is malformed, was changed, or belongs to another enclave."""


class PlatformError(HavenError):
    """The simulated platform's data file is missing, unreadable or invalid."""


class QuoteError(HavenError):
    """The quoting enclave refused to quote a report."""
