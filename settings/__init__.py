"""Env-based settings with profiles (local, test, production)."""

from settings.config import Settings
from settings.loader import SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "load_settings"]
