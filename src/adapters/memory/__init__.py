"""L1 arena memory: the bytes behind the domain's extents."""
