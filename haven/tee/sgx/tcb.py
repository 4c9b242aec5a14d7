"""Intel's TCB statuses: the values of ``tcbStatus`` in TCB Info levels.

Intel SGX and TDX DCAP, PCS API "Get TCB Info" v3 schema (tcbLevels[].tcbStatus), in the order of
increasing concern. The simulated platform issues them and the verifier evaluates them.
"""

from __future__ import annotations

TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)
