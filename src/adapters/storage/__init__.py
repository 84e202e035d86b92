"""L2 storage backends, one adapter class per file."""
