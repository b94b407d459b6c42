"""The resilient service-communication framework and the ML Integration Service built on it."""
