"""FastAGI: the controller's side of each call that Asterisk hands it."""
