"""The coordinator's HTTP service and loops, and the server-side coordinator client."""
