"""The web helper: error rendering (one aiohttp middleware) and request parameters.

Below the features: a feature's HTTP handlers use it; it imports nothing of the app."""
