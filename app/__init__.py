"""The resilient service-communication framework and the ML Integration Service built on it."""

# Loaded first on purpose: app.resilience reads app.clients.exceptions, and app.clients
# builds on app.resilience. Entering through app.clients keeps that cycle one-way.
from app import clients  # noqa: F401
