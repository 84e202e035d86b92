"""ZMQ transport: the wire codec, the ROUTER server and the typed client of `wire-protocol.md`."""
