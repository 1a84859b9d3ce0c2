"""Example architectures, pools and search configs, shipped so `itas up` finds them by name."""
