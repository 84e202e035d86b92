"""Runtime plugins: the child processes `--runtime-plugin-locations` launches beside the server."""
