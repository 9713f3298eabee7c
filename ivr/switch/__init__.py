"""Where the controller's Asterisk comes from: embedded (chroot) or external."""
