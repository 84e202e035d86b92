"""Telemetry adapters: the event bus, Prometheus metrics, the lookup-hash log and OTel tracing."""
