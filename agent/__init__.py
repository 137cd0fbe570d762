"""dap-agent: enforces the DAP managed-service contract on a Microsoft 365 tenant."""

__version__ = "0.1.0"
