"""Call flows: translate AGI/AMI I/O to and from the pure rules in :mod:`ivr.rules`."""
