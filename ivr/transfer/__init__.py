"""R5 warm transfer: the service (AMI + FastAGI), its targets and its HTTP route."""
