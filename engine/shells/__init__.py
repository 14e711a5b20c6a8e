"""Interactive shells: guest PTYs that outlive their clients, with a scrollback to replay."""
