"""How simulated evidence names itself, so that verifiers can recognise it.

The simulated platform (``haven.tee.sim``) stands for hardware and is not enclave code; verifiers inside
the enclave and the key broker still need to tell simulated evidence from a vendor's. These are the
names its certificates carry: no vendor uses them, and no policy trusts them unless it names them.
"""

from __future__ import annotations

ORGANIZATION = "Haven (simulated)"
ROOT_CA_NAME = "Haven Simulation Root CA"
PLATFORM_CA_NAME = "Haven Simulation Platform CA"
TCB_SIGNING_NAME = "Haven Simulation TCB Signing"
PCK_NAME = "Haven Simulation PCK Certificate"
