"""Call-handling controller for Asterisk: phone etiquette enforced at the switch."""

__version__ = "0.1.0"
