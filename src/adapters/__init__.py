"""Implementations of the ports: transport, transfer, memory, storage, HTTP, telemetry."""
