"""Haven: unmodified WebAssembly applications in an enclave, on a host nobody has to trust."""

__version__ = "0.1.0"
